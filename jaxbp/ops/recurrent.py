"""Recurrent layers trained by backpropagation through time (note 004's chain rule, unrolled over steps).

A recurrent layer applies the same weights at every step t = 1..T, so it is a T-layer network whose
layers share W: the forward is one ``lax.scan`` over time, and the backward is one ``lax.scan`` backwards
over time that carries the gradient of the hidden state from step t + 1 to step t. Only that carry is
sequential; every weight gradient is a sum over steps of per-step outer products, so the backward emits
the per-step pre-activation gradients dz_t and forms dW = Σ_t (input_t)ᵀ·dz_t afterwards as ONE matmul
over all N·T rows (note 001's dW = Xᵀ·dY with the time axis counted as part of the batch), and likewise
the input gradient dX = dZ·W_xᵀ. The forward hoists X·W_x out of the scan the same way.

Along the carried path the gradient is multiplied, step after step, by the local Jacobian ∂h_t/∂h_{t−1}
(diag(1 − h_t²)·W_hᵀ for the tanh RNN): its norm shrinks or grows geometrically with the distance, the
vanishing or exploding gradient of note 004. The LSTM's cell state carries its gradient through
∂c_t/∂c_{t−1} = diag(f_t) instead, with no weight matrix and no squashing on the way.

Shapes: x ``[N, T, D]`` (batch first, as ``torch.nn.RNN(batch_first=True)``), hidden states
``[N, T, H]``; internally time-major ``[T, N, ·]`` so that the scan runs over the leading axis.
"""

from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_arrays


def _check_shapes(op, x, h0, w_x, w_h, b, gates):
  """Validates x [N, T, D], h0 [N, H], w_x [D, k·H], w_h [H, k·H], b [k·H] for k = ``gates``."""
  xs, hs = x.shape, h0.shape
  if len(xs) != 3 or xs[1] < 1:
    raise ValueError(f"{op}: argument 'x' must have shape [N, T, D] with T >= 1, got {xs}")
  if len(hs) != 2 or hs[0] != xs[0]:
    raise ValueError(f"{op}: argument 'h0' must have shape [N, H] with N = {xs[0]} (x's batch), got {hs}")
  n, h = hs
  want = {"w_x": (xs[2], gates * h), "w_h": (h, gates * h), "b": (gates * h,)}
  for name, arr in (("w_x", w_x), ("w_h", w_h), ("b", b)):
    if arr.shape != want[name]:
      kh = f"{gates}·H" if gates > 1 else "H"
      raise ValueError(f"{op}: argument '{name}' must have shape {want[name]} (D = {xs[2]}, H = {h}, "
                       f"{kh} = {gates * h}), got {arr.shape}")


def _time_major(a):
  return jnp.swapaxes(a, 0, 1)


def _state(first, *inputs):
  """The initial state ``first`` in the dtype of the states: all inputs' promoted dtype, the dtype of
  x_t·W_x + h_{t−1}·W_h + b, so that the scan's carry keeps one type when h0 (c0) is of another dtype."""
  return first.astype(jnp.result_type(first, *inputs))


def _previous(first, states):
  """[T, N, H] states shifted one step: the state before step t, ``first`` before step 1."""
  return jnp.concatenate([first[None].astype(states.dtype), states[:-1]], axis=0)


def _input_projection(x, w_x, b):
  """X·W_x + b for all steps at once, time-major: [N, T, D] → [T, N, k·H]; one matmul, not T."""
  return jnp.einsum("ntd,dk->tnk", x, w_x) + b


def _weight_grads(x, h_prev, dz, w_x):
  """dX = dZ·W_xᵀ, dW_x = Σₜ xₜᵀ·dzₜ, dW_h = Σₜ hₜ₋₁ᵀ·dzₜ, db = Σₜₙ dzₜ: each one matmul over N·T rows."""
  dx = jnp.einsum("tnk,dk->ntd", dz, w_x)
  dw_x = jnp.einsum("ntd,tnk->dk", x, dz)
  dw_h = jnp.einsum("tnh,tnk->hk", h_prev, dz)
  return dx, dw_x, dw_h, jnp.sum(dz, axis=(0, 1))


def _cast(grads, like):
  return tuple(g.astype(a.dtype) for g, a in zip(grads, like))


# ----------------------------------------------------------------------------------------------- rnn

def rnn(x: jax.typing.ArrayLike, h0: jax.typing.ArrayLike, w_x: jax.typing.ArrayLike,
        w_h: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
  """The tanh RNN over a sequence: h_t = tanh(x_t·W_x + h_{t−1}·W_h + b), t = 1..T.  (Note 004.)

  Local Jacobians of one step, with a_t = x_t·W_x + h_{t−1}·W_h + b and h_t = tanh(a_t):
  ∂h_t/∂a_t = diag(1 − h_t²); ∂a_t/∂h_{t−1} = W_hᵀ, ∂a_t/∂x_t = W_xᵀ.
  VJP (backpropagation through time), with g_t the upstream gradient of h_t (from the outputs; the
  final-state cotangent is added at t = T):
    dh_t = g_t + da_{t+1}·W_hᵀ          (the carry of the backward scan, da_{T+1}·W_hᵀ = 0)
    da_t = dh_t ⊙ (1 − h_t²)
    dh_0 = da_1·W_hᵀ,  dx_t = da_t·W_xᵀ,  dW_x = Σ_t x_tᵀ·da_t,  dW_h = Σ_t h_{t−1}ᵀ·da_t,  db = Σ_{t,n} da_t.
  tanh is smooth: no choice at non-smooth points.

  Residuals: the inputs (x, h0 and the weights: no new buffers) and the hidden states h_1..h_T,
  N·T·H numbers, which are the output anyway: 1 − h_t² is tanh's derivative, so no pre-activation
  is kept. The backward's only temporary of that size is da, N·T·H.

  Args:
    x: float array [N, T, D], T ≥ 1.
    h0: float array [N, H], the initial state.
    w_x: float array [D, H].
    w_h: float array [H, H].
    b: float array [H].

  Returns:
    ``(hs, h_T)``: the hidden states [N, T, H] and the final state [N, H] (= hs[:, -1]), in the inputs'
    promoted dtype (an h0 of another dtype than x is cast to it); each gradient is in its input's dtype.
  """
  x, h0, w_x, w_h, b = float_arrays("rnn", x=x, h0=h0, w_x=w_x, w_h=w_h, b=b)
  _check_shapes("rnn", x, h0, w_x, w_h, b, gates=1)
  return _rnn(x, h0, w_x, w_h, b)


class _RNNResiduals(NamedTuple):
  x: jax.Array    # [N, T, D] input: dW_x = Xᵀ·dA (no new buffer)
  h0: jax.Array   # [N, H] initial state: the state before step 1, for dW_h (no new buffer)
  w_x: jax.Array  # weights: dX = dA·W_xᵀ and dh = dA·W_hᵀ (no new buffers)
  w_h: jax.Array
  b: jax.Array    # only for its dtype (db is cast to it)
  hs: jax.Array   # [T, N, H] hidden states, time-major: tanh' = 1 − h_t², and dW_h


def _rnn_fwd(x, h0, w_x, w_h, b):
  def step(h, xw_t):
    h = jnp.tanh(xw_t + h @ w_h)
    return h, h
  h_last, hs = lax.scan(step, _state(h0, x, w_x, w_h, b), _input_projection(x, w_x, b))
  return (_time_major(hs), h_last), _RNNResiduals(x, h0, w_x, w_h, b, hs)


def _rnn_bwd(res, g):
  x, h0, w_x, w_h, b, hs = res
  g_hs, g_last = g

  def step(dh_next, inputs):  # dh_next = da_{t+1}·W_hᵀ
    h_t, g_t = inputs
    da = (g_t + dh_next) * (1 - h_t * h_t)
    return da @ w_h.T, da

  dh0, da = lax.scan(step, g_last.astype(hs.dtype), (hs, _time_major(g_hs).astype(hs.dtype)),
                     reverse=True)
  dx, dw_x, dw_h, db = _weight_grads(x, _previous(h0, hs), da, w_x)
  return _cast((dx, dh0, dw_x, dw_h, db), (x, h0, w_x, w_h, b))


def _rnn_ref(x, h0, w_x, w_h, b):
  def step(h, xw_t):
    h = jnp.tanh(xw_t + jnp.matmul(h, w_h))
    return h, h
  h_last, hs = lax.scan(step, _state(h0, x, w_x, w_h, b), jnp.swapaxes(jnp.matmul(x, w_x) + b, 0, 1))
  return jnp.swapaxes(hs, 0, 1), h_last


def _recurrent_sampler(cell, n=None, t=None, d=None, h=None):
  """Inputs of ``rnn`` or ``lstm`` with the sizes given fixed and the others drawn small."""
  def sample(rng, dtype):
    size = lambda given, low, high: int(rng.integers(low, high)) if given is None else given
    nn, tt, dd, hh = size(n, 2, 4), size(t, 2, 5), size(d, 1, 4), size(h, 1, 4)
    k = 4 if cell == "lstm" else 1
    states = tuple(uniform(rng, (nn, hh), dtype, -1.0, 1.0) for _ in range(2 if cell == "lstm" else 1))
    return (uniform(rng, (nn, tt, dd), dtype), *states, uniform(rng, (dd, k * hh), dtype, -1.0, 1.0),
            uniform(rng, (hh, k * hh), dtype, -1.0, 1.0), uniform(rng, (k * hh,), dtype, -0.5, 0.5)), {}
  return sample


def _recurrent_branches(cell):
  return {"T = 1": _recurrent_sampler(cell, t=1), "batch 1": _recurrent_sampler(cell, n=1),
          "N, T > 1": _recurrent_sampler(cell), "N = 0": _recurrent_sampler(cell, n=0),
          "D = 0": _recurrent_sampler(cell, d=0)}


_RNN = mixed_dtypes(_recurrent_branches("rnn"), "N, T > 1", arg=1)  # h0 below x and the weights


_rnn = vjp_rule(rnn, _rnn_fwd, _rnn_bwd)
register(rnn, _rnn_ref, any_branch(_RNN), branches=_RNN, note="004")


# ---------------------------------------------------------------------------------------------- lstm

class _LSTMResiduals(NamedTuple):
  x: jax.Array    # [N, T, D] input: recomputes X·W_x and gives dW_x (no new buffer)
  h0: jax.Array   # [N, H] initial states: the states before step 1 (no new buffer)
  c0: jax.Array
  w_x: jax.Array  # weights: recompute the gates, and dX = dZ·W_xᵀ, dh = dZ·W_hᵀ (no new buffers)
  w_h: jax.Array
  b: jax.Array
  hs: jax.Array   # [T, N, H] hidden states: recompute the gates, give dW_h
  cs: jax.Array   # [T, N, H] cell states: tanh(c_t) and ∂c_t/∂f_t = c_{t−1}


def lstm(x: jax.typing.ArrayLike, h0: jax.typing.ArrayLike, c0: jax.typing.ArrayLike,
         w_x: jax.typing.ArrayLike, w_h: jax.typing.ArrayLike,
         b: jax.typing.ArrayLike) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """The LSTM over a sequence, gates packed i, f, g, o as PyTorch packs them.  (Note 004.)

  Forward, with z_t = x_t·W_x + h_{t−1}·W_h + b split into four blocks of H:
    i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
    c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t).
  Local Jacobians of one step: ∂h_t/∂o = tanh(c_t), ∂h_t/∂c_t = o ⊙ (1 − tanh²(c_t)),
  ∂c_t/∂f = c_{t−1}, ∂c_t/∂i = g, ∂c_t/∂g = i, ∂c_t/∂c_{t−1} = f; through the activations
  σ' = σ(1 − σ), tanh' = 1 − tanh².
  VJP (backpropagation through time), carrying (dh, dc) backwards from (g_h_T, g_c_T):
    dh_t = g_t + dz_{t+1}·W_hᵀ
    dc_t = dc from step t + 1 (⊙ f_{t+1}) + dh_t ⊙ o ⊙ (1 − tanh²(c_t))
    dz_o = dh_t ⊙ tanh(c_t) ⊙ o(1 − o),  dz_i = dc_t ⊙ g ⊙ i(1 − i),
    dz_g = dc_t ⊙ i ⊙ (1 − g²),            dz_f = dc_t ⊙ c_{t−1} ⊙ f(1 − f)
    dh_0 = dz_1·W_hᵀ, dc_0 = dc_1 ⊙ f_1; dX, dW_x, dW_h, db from dZ as for ``rnn``.
  Every function is smooth: no choice at non-smooth points.

  Residuals: the inputs (no new buffers) and the states h_1..h_T and c_1..c_T, 2·N·T·H numbers. The
  gates are NOT kept (autodiff keeps i, f, g, o and tanh(c_t) per step, 5·N·T·H or more): the
  backward recomputes them chunk by chunk from the saved states. For each chunk of CHUNK = 16 steps
  (and one of T mod 16 steps at the start), last chunk first: Z = X·W_x + H_prev·W_h + b over the
  chunk (two matmuls over N·16 rows: the forward's FLOPs once more, at matmul efficiency), the step
  backward over the chunk in reverse, and the chunk's dW_x, dW_h, db added to running sums as matmuls.
  Z and dZ hold 4·N·min(16, T)·H numbers each at a time, not 4·N·T·H; what grows with T is the
  residuals and dX.

  Args:
    x: float array [N, T, D], T ≥ 1.
    h0: float array [N, H], the initial hidden state.
    c0: float array [N, H], the initial cell state.
    w_x: float array [D, 4H], columns in the order i, f, g, o.
    w_h: float array [H, 4H].
    b: float array [4H].

  Returns:
    ``(hs, (h_T, c_T))``: the hidden states [N, T, H] and the final hidden and cell states [N, H], in
    the inputs' promoted dtype (h0 and c0 are cast to it); each gradient is in its input's dtype.
  """
  x, h0, c0, w_x, w_h, b = float_arrays("lstm", x=x, h0=h0, c0=c0, w_x=w_x, w_h=w_h, b=b)
  _check_shapes("lstm", x, h0, w_x, w_h, b, gates=4)
  if c0.shape != h0.shape:
    raise ValueError(f"lstm: argument 'c0' must have h0's shape {h0.shape}, got {c0.shape}")
  return _lstm(x, h0, c0, w_x, w_h, b)


def _gates(z):
  """(i, f, g, o) of pre-activations z [..., 4H]."""
  z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
  return jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)


def _lstm_fwd(x, h0, c0, w_x, w_h, b):
  def step(carry, xw_t):
    h, c = carry
    i, f, g, o = _gates(xw_t + h @ w_h)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), (h, c)
  carry = (_state(h0, c0, x, w_x, w_h, b), _state(c0, h0, x, w_x, w_h, b))
  (h_last, c_last), (hs, cs) = lax.scan(step, carry, _input_projection(x, w_x, b))
  return (_time_major(hs), (h_last, c_last)), _LSTMResiduals(x, h0, c0, w_x, w_h, b, hs, cs)


def _lstm_step_bwd(w_h):
  def step(carry, inputs):
    dh_next, dc_next = carry  # dz_{t+1}·W_hᵀ and dc_{t+1} ⊙ f_{t+1}
    z_t, c_t, c_prev, g_t = inputs
    i, f, g, o = _gates(z_t)
    tc = jnp.tanh(c_t)
    dh = g_t + dh_next
    dc = dc_next + dh * o * (1 - tc * tc)
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                          dh * tc * o * (1 - o)], axis=-1)
    return (dz @ w_h.T, dc * f), dz
  return step


CHUNK = 16  # steps per chunk of the LSTM's backward: Z and dZ are held for CHUNK steps, not T


def _lstm_chunk_bwd(res, g_hs, start, length):
  """The backward of steps start .. start + length − 1 (``length`` static), as a carry update.

  Recomputes the chunk's gate inputs Z = X·W_x + H_prev·W_h + b (two matmuls over N·length rows), runs
  the step backward over the chunk in reverse, and adds the chunk's matmul-shaped gradients.
  """
  def update(carry):
    dh, dc, dx, dw_x, dw_h, db = carry
    n, d = res.x.shape[0], res.x.shape[2]
    h_prev = _previous(_state_before(res.h0, res.hs, start), lax.dynamic_slice_in_dim(res.hs, start, length))
    c_prev = _previous(_state_before(res.c0, res.cs, start), lax.dynamic_slice_in_dim(res.cs, start, length))
    x = lax.dynamic_slice_in_dim(res.x, start, length, axis=1)
    z = _input_projection(x, res.w_x, res.b) + h_prev @ res.w_h  # the gates' inputs, recomputed
    g_t = _time_major(lax.dynamic_slice_in_dim(g_hs, start, length, axis=1))
    (dh, dc), dz = lax.scan(_lstm_step_bwd(res.w_h), (dh, dc),
                            (z, lax.dynamic_slice_in_dim(res.cs, start, length), c_prev, g_t), reverse=True)
    dx_c, dw_x_c, dw_h_c, db_c = _weight_grads(x, h_prev, dz, res.w_x)
    dx = lax.dynamic_update_slice_in_dim(dx, dx_c.reshape(n, length, d), start, axis=1)
    return dh, dc, dx, dw_x + dw_x_c, dw_h + dw_h_c, db + db_c
  return update


def _state_before(first, states, start):
  """The state before step ``start`` (0-based): ``first`` at 0, else states[start − 1]."""
  previous = lax.dynamic_index_in_dim(states, jnp.maximum(start - 1, 0), keepdims=False)
  return jnp.where(start == 0, first.astype(states.dtype), previous)


def _lstm_bwd(res, g):
  g_hs, (g_h, g_c) = g
  dtype = res.hs.dtype
  t = res.hs.shape[0]
  size = min(CHUNK, t)
  full, rest = divmod(t, size)
  carry = (g_h.astype(dtype), g_c.astype(dtype), jnp.zeros(res.x.shape, dtype),
           jnp.zeros(res.w_x.shape, dtype), jnp.zeros(res.w_h.shape, dtype), jnp.zeros(res.b.shape, dtype))
  g_hs = g_hs.astype(dtype)

  def chunk(carry, k):  # the full chunks after the first ``rest`` steps, last chunk first
    return _lstm_chunk_bwd(res, g_hs, rest + k * size, size)(carry), None

  carry, _ = lax.scan(chunk, carry, jnp.arange(full), reverse=True)
  if rest:
    carry = _lstm_chunk_bwd(res, g_hs, 0, rest)(carry)
  dh0, dc0, dx, dw_x, dw_h, db = carry
  return _cast((dx, dh0, dc0, dw_x, dw_h, db), (res.x, res.h0, res.c0, res.w_x, res.w_h, res.b))


def _lstm_ref(x, h0, c0, w_x, w_h, b):
  hidden = h0.shape[-1]

  def step(carry, xw_t):
    h, c = carry
    z = xw_t + jnp.matmul(h, w_h)
    i = jax.nn.sigmoid(z[:, :hidden])
    f = jax.nn.sigmoid(z[:, hidden:2 * hidden])
    g = jnp.tanh(z[:, 2 * hidden:3 * hidden])
    o = jax.nn.sigmoid(z[:, 3 * hidden:])
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), h
  carry = (_state(h0, c0, x, w_x, w_h, b), _state(c0, h0, x, w_x, w_h, b))
  (h, c), hs = lax.scan(step, carry, jnp.swapaxes(jnp.matmul(x, w_x) + b, 0, 1))
  return jnp.swapaxes(hs, 0, 1), (h, c)


_LSTM = {**_recurrent_branches("lstm"),  # T > CHUNK: full chunks of the backward and a remainder
         "T = CHUNK + 3": _recurrent_sampler("lstm", n=1, t=CHUNK + 3, d=1, h=1)}
_LSTM = mixed_dtypes(mixed_dtypes(_LSTM, "N, T > 1", arg=1), "T = CHUNK + 3", arg=2)  # h0, then c0, lower


_lstm = vjp_rule(lstm, _lstm_fwd, _lstm_bwd)
register(lstm, _lstm_ref, any_branch(_LSTM), branches=_LSTM, note="004")
