"""rnn and lstm: PyTorch's gate order, the final state, the chunked backward's branches, the residual
choice measured as compiled memory, and bad arguments. (The registry-wide test checks every gradient.)"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.ops import recurrent


def _normal(rng, *shape, scale=0.5):
  return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)


def _lstm_args(rng, n, t, d, h):
  return (_normal(rng, n, t, d), _normal(rng, n, h), _normal(rng, n, h), _normal(rng, d, 4 * h),
          _normal(rng, h, 4 * h), _normal(rng, 4 * h))


def test_lstm_packs_its_gates_i_f_g_o():
  """Weights 0 and a bias that opens f and o and shuts i: the cell keeps c0 and h = tanh(c0)."""
  n, h = 2, 3
  c0 = jnp.asarray(np.linspace(-1, 1, n * h).reshape(n, h), jnp.float32)
  big = 30.0
  b = jnp.concatenate([jnp.full(h, -big), jnp.full(h, big), jnp.zeros(h), jnp.full(h, big)])
  hs, (h_last, c_last) = ops.lstm(jnp.ones((n, 4, 1)), jnp.zeros((n, h)), c0, jnp.zeros((1, 4 * h)),
                                  jnp.zeros((h, 4 * h)), b)
  chex.assert_trees_all_close(c_last, c0, atol=1e-6)
  chex.assert_trees_all_close(hs, jnp.broadcast_to(jnp.tanh(c0)[:, None], (n, 4, h)), atol=1e-6)
  chex.assert_trees_all_equal(h_last, hs[:, -1])


def test_rnn_one_step_is_tanh_of_the_affine_map():
  rng = np.random.default_rng(0)
  x, h0, w_x, w_h, b = _normal(rng, 2, 1, 3), _normal(rng, 2, 4), _normal(rng, 3, 4), _normal(rng, 4, 4), \
      _normal(rng, 4)
  hs, h_last = ops.rnn(x, h0, w_x, w_h, b)
  chex.assert_trees_all_close(hs[:, 0], jnp.tanh(x[:, 0] @ w_x + h0 @ w_h + b), rtol=1e-5)
  chex.assert_trees_all_equal(h_last, hs[:, 0])


@pytest.mark.parametrize("t", [4, 5])  # two full chunks; two full chunks and a remainder of one step
def test_lstm_chunked_backward_matches_autodiff(monkeypatch, t):
  monkeypatch.setattr(recurrent, "CHUNK", 2)
  args = _lstm_args(np.random.default_rng(t), 2, t, 3, 2)
  cot = (_normal(np.random.default_rng(9), 2, t, 2), (_normal(np.random.default_rng(8), 2, 2),) * 2)
  vjp = lambda f: jax.jit(lambda args, cot: jax.vjp(f, *args)[1](cot))(args, cot)  # traced with CHUNK = 2
  got, want = vjp(ops.lstm), vjp(ops.reference.lstm)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)


def test_lstm_keeps_less_than_autodiff():
  """The recompute-the-gates residual: the compiled gradient's temporary memory is below jax.grad's."""
  n, t, d, h = 4, 32, 16, 16
  shapes = [(n, t, d), (n, h), (n, h), (d, 4 * h), (h, 4 * h), (4 * h,)]
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  temp = {}
  for name, fn in (("manual", ops.lstm), ("autodiff", ops.reference.lstm)):
    grad = jax.jit(jax.grad(lambda *a, fn=fn: jnp.sum(fn(*a)[0] ** 2), argnums=(3, 4, 5)))
    temp[name] = grad.lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert temp["manual"] < 0.75 * temp["autodiff"], temp


def test_bad_arguments_name_the_argument():
  x, h0 = jnp.ones((2, 3, 4)), jnp.ones((2, 5))
  w_x, w_h, b = jnp.ones((4, 5)), jnp.ones((5, 5)), jnp.ones(5)
  with pytest.raises(ValueError, match=r"rnn: argument 'x' must have shape \[N, T, D\] with T >= 1, got \(2, 0, 4\)"):
    ops.rnn(jnp.ones((2, 0, 4)), h0, w_x, w_h, b)
  with pytest.raises(ValueError, match=r"argument 'h0' must have shape \[N, H\] with N = 2"):
    ops.rnn(x, jnp.ones((3, 5)), w_x, w_h, b)
  with pytest.raises(ValueError, match=r"rnn: argument 'w_h' must have shape \(5, 5\)"):
    ops.rnn(x, h0, w_x, jnp.ones((5, 4)), b)
  with pytest.raises(ValueError, match=r"lstm: argument 'w_x' must have shape \(4, 20\) \(D = 4, H = 5, 4·H = 20\)"):
    ops.lstm(x, h0, h0, w_x, jnp.ones((5, 20)), jnp.ones(20))
  with pytest.raises(ValueError, match=r"lstm: argument 'c0' must have h0's shape \(2, 5\), got \(2, 4\)"):
    ops.lstm(x, h0, jnp.ones((2, 4)), jnp.ones((4, 20)), jnp.ones((5, 20)), jnp.ones(20))
  with pytest.raises(TypeError, match="lstm: argument 'b' must be a floating-point array"):
    ops.lstm(x, h0, h0, jnp.ones((4, 20)), jnp.ones((5, 20)), jnp.ones(20, jnp.int32))
