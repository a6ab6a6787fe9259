"""Normalisation and regularisation (notes 001, 004): batch norm, layer norm, inverted dropout."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import static_number
from jaxbp.ops._util import unbroadcast


def _normalize(x, axes, eps):
  """x̂ = (x − μ)/√(σ² + ε) over ``axes`` (biased variance), with μ and 1/√(σ² + ε)."""
  mean = jnp.mean(x, axis=axes, keepdims=True)
  centered = x - mean
  inv_std = jax.lax.rsqrt(jnp.mean(centered * centered, axis=axes, keepdims=True) + eps)
  return centered * inv_std, mean, inv_std


def _normalize_bwd(xhat, inv_std, h, axes):
  """The compact backward of x̂ = (x − μ)/σ over ``axes``, for upstream gradient ``h`` = ∂L/∂x̂.

  With n the number of elements normalised together (the product of the sizes of ``axes``):
  dx = (1/σ)/n · (n·h − Σh − x̂·Σ(h·x̂)).
  The first term is the direct path, the second the mean's, the third the variance's: the three
  staged backward steps collapsed into one line.
  """
  n = math.prod(xhat.shape[a] for a in axes)
  sum_h = jnp.sum(h, axis=axes, keepdims=True)
  sum_hx = jnp.sum(h * xhat, axis=axes, keepdims=True)
  return inv_std / n * (n * h - sum_h - xhat * sum_hx)


def _check_affine(op, x, gamma, beta, expected):
  for name, p in (("gamma", gamma), ("beta", beta)):
    if jnp.shape(p) != expected:
      raise ValueError(f"{op}: argument '{name}' must have shape {expected} for x of shape "
                       f"{jnp.shape(x)}, got {jnp.shape(p)}")


class _NormResiduals(NamedTuple):
  x: jax.Array        # the input, not x̂: alive anyway where the caller holds it; x̂ is recomputed
  mean: jax.Array     # μ, one per normalised group (keepdims): recomputes x̂ = (x − μ)·(1/σ)
  inv_std: jax.Array  # 1/σ, one per group: x̂, and the 1/σ factor of dx
  gamma: jax.Array    # γ: h = g·γ in dx, and dγ's shape and dtype (a parameter)
  beta: jax.Array     # β, only for dβ's shape and dtype (a parameter, no new buffer)


def _affine_norm_fwd(axes, x, gamma, beta, eps):
  """y = γ·x̂ + β with x̂ normalised over ``axes``; keeps x, μ, 1/σ, γ (and β, for its dtype only).

  The one forward of every "normalise over a set of axes, then scale and shift" rule: batch norm
  (every axis but the channels), layer norm (the last axis), group norm (a view of x in which each
  group is a set of axes). γ and β broadcast against x.

  Residuals: the input x, not x̂. Both are arrays of x's size, but x is alive anyway wherever the caller
  holds it (an argument of the jitted step, a residual stream), while x̂ would be a NEW buffer living
  until the backward; x̂ = (x − μ)·(1/σ) is recomputed there, one subtract and one multiply per element,
  from μ and 1/σ (one float each per normalised group). γ and β are parameters, alive anyway.
  """
  xhat, mean, inv_std = _normalize(x, axes, eps)
  return gamma * xhat + beta, _NormResiduals(x, mean, inv_std, gamma, beta)


def _affine_norm_bwd(axes, res, g):
  """dx by the compact formula with h = g·γ; dγ = Σ g·x̂, dβ = Σ g over every axis γ, β were broadcast along."""
  x, mean, inv_std, gamma, beta = res
  xhat = (x - mean) * inv_std                                      # x̂, recomputed
  dx = _normalize_bwd(xhat, inv_std, g * gamma, axes)
  dgamma = unbroadcast(g * xhat, gamma.shape, gamma.dtype)
  dbeta = unbroadcast(g, beta.shape, beta.dtype)
  return dx.astype(xhat.dtype), dgamma, dbeta


# ---------------------------------------------------------------------------------------- batch_norm

def batch_norm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = 1e-5) -> jax.Array:
  """Batch normalisation in training mode: y = γ·x̂ + β, x̂ = (x − μ_B)/√(σ²_B + ε).  (Notes 001, 004.)

  μ_B and σ²_B (biased) are per channel (the last axis), over every other axis: the batch for
  x [N, C], the batch and every spatial position for NHWC x [N, H, W, C] (spatial batch norm, as
  CS231n's ``spatial_batchnorm_forward``). Every x̂ depends on every value of its channel (through
  μ_B and σ²_B), so the local Jacobian is dense within a channel. VJP, with m = N·H·W the number of
  values per channel and the sums over them:
  dx = (γ/σ)/m · (m·g − Σg − x̂·Σ(g·x̂)) (the compact formula, not the staged one),
  dγ = Σ g·x̂, dβ = Σ g. The rule keeps x, μ, 1/σ (one float each per channel) and γ (β only for its
  dtype) and recomputes x̂ (why x and not x̂: see ``layer_norm``).

  Running statistics for evaluation are the caller's state (see ``jaxbp.models``): this op only
  normalises with the batch's own statistics.

  Args:
    x: float array [N, ..., C] (N = 0 gives an empty output and zero dγ, dβ, as jnp does).
    gamma: float array [C], the scale.
    beta: float array [C], the shift.
    eps: Python float ≥ 0 added to the variance.
  """
  x, gamma, beta = float_arrays("batch_norm", x=x, gamma=gamma, beta=beta)
  if x.ndim < 2:
    raise ValueError(f"batch_norm: argument 'x' must be [N, ..., C] with at least 2 axes, got shape {x.shape}")
  _check_affine("batch_norm", x, gamma, beta, x.shape[-1:])
  return _batch_norm(x, gamma, beta, static_number("batch_norm", "eps", eps, low=0.0))


def _batch_axes(x):
  return tuple(range(x.ndim - 1))  # every axis but the channels


def _batch_norm_fwd(x, gamma, beta, eps):
  return _affine_norm_fwd(_batch_axes(x), x, gamma, beta, eps)


def _batch_norm_bwd(eps, res, g):
  return _affine_norm_bwd(_batch_axes(g), res, g)


def _batch_norm_ref(x, gamma, beta, eps=1e-5):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  var = jnp.var(x, axis=axes)
  return gamma * (x - mean) / jnp.sqrt(var + eps) + beta


def _norm_sampler(shape, affine_shape, eps=(1e-5, 0.1)):
  """Samples (x, γ, β) with x of ``shape`` (fixed, so compiled once) and γ, β of ``affine_shape(shape)``."""
  def sample(rng, dtype):
    x = uniform(rng, shape, dtype, low=-3.0, high=3.0)
    gamma, beta = (uniform(rng, affine_shape(shape), dtype) for _ in range(2))
    return (x, gamma, beta), {"eps": float(rng.choice(eps))}
  return sample


def _channels(shape):
  return shape[-1:]


_BATCH = mixed_dtypes({
    "[N, C]": _norm_sampler((4, 3), _channels),
    "[N, H, W, C] (spatial)": _norm_sampler((2, 3, 2, 3), _channels),
    "batch of one": _norm_sampler((1, 3), _channels, eps=(0.1,)),  # x̂ = 0: only ε keeps 1/σ finite
    "N = 0": _norm_sampler((0, 3), _channels),
    "C = 0": _norm_sampler((4, 0), _channels),
})


_batch_norm = vjp_rule(batch_norm, _batch_norm_fwd, _batch_norm_bwd, nondiff_argnums=(3,))
register(batch_norm, _batch_norm_ref, any_branch(_BATCH), branches=_BATCH, note="001, 004")


# ---------------------------------------------------------------------------------------- layer_norm

def layer_norm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = 1e-5) -> jax.Array:
  """Layer normalisation over the last axis: y = γ·x̂ + β, x̂ = (x − μ)/√(σ² + ε) per row.  (Note 004.)

  Each row's local Jacobian is dense along its D features. VJP: the same compact backward as
  ``batch_norm``, along the last axis instead of the first, with D features per row:
  dx = (1/σ)/D · (D·h − Σ_d h − x̂·Σ_d(h·x̂)), h = g·γ;
  dγ = Σ_rows g·x̂, dβ = Σ_rows g.

  Residuals: the input x, μ and 1/σ per row (two floats per row), γ (and β for its dtype); x̂ is
  recomputed in the backward. Keeping x̂ would cost an array of x's size as a NEW buffer; x is alive
  anyway wherever the caller holds it (a jitted step's argument, a transformer's residual stream), so
  the forward adds only 2 floats per row to what lives until the backward (as Liger-Kernel's and
  ``rms_norm``). Apex's memory-efficient variant keeps the output y instead and recovers
  x̂ = (y − β)/γ, which needs γ ≠ 0 everywhere; x works for every γ. Measured: ``jaxbp bench``
  (docs/performance.md).

  Args:
    x: float array [..., D].
    gamma: float array [D].
    beta: float array [D].
    eps: Python float ≥ 0 added to the variance.
  """
  x, gamma, beta = float_arrays("layer_norm", x=x, gamma=gamma, beta=beta)
  if x.ndim < 1:
    raise ValueError("layer_norm: argument 'x' needs a feature axis [..., D], got a scalar")
  _check_affine("layer_norm", x, gamma, beta, x.shape[-1:])
  return _layer_norm(x, gamma, beta, static_number("layer_norm", "eps", eps, low=0.0))


def _layer_norm_fwd(x, gamma, beta, eps):
  return _affine_norm_fwd((-1,), x, gamma, beta, eps)  # normalised over the feature axis −1


def _layer_norm_bwd(eps, res, g):
  return _affine_norm_bwd((-1,), res, g)


def _layer_norm_ref(x, gamma, beta, eps=1e-5):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return gamma * (x - mean) / jnp.sqrt(var + eps) + beta


_ROWS = mixed_dtypes({
    "[D]": _norm_sampler((4,), _channels),
    "[N, D]": _norm_sampler((3, 4), _channels),
    "[B, T, D]": _norm_sampler((2, 3, 4), _channels),
    "one feature": _norm_sampler((3, 1), _channels, eps=(0.1,)),  # x̂ = 0: only ε keeps 1/σ finite
    "no rows": _norm_sampler((0, 4), _channels),
    "D = 0": _norm_sampler((3, 0), _channels),
})


_layer_norm = vjp_rule(layer_norm, _layer_norm_fwd, _layer_norm_bwd, nondiff_argnums=(3,))
register(layer_norm, _layer_norm_ref, any_branch(_ROWS), branches=_ROWS, note="004")


# ------------------------------------------------------------------------------------------- dropout

def dropout(key: jax.Array, x: ArrayLike, rate: float) -> jax.Array:
  """Inverted dropout: y = x · m / (1 − rate), m ~ Bernoulli(1 − rate) elementwise.  (Note 004.)

  The mask is drawn from ``key``, so the same key gives the same mask; nothing is hidden. The local
  Jacobian is diag(m)/(1 − rate): VJP dx = g · m / (1 − rate), reusing the forward's mask (the rule
  keeps it; the key gets no gradient). Scaling at training time keeps E[y] = x, so evaluation just
  skips the op. ``rate == 0`` returns ``x`` unchanged.

  Args:
    key: a PRNG key (``jax.random.key`` or ``PRNGKey``).
    x: float array of any shape.
    rate: Python float in [0, 1), the probability of dropping each element.
  """
  (x,) = float_arrays("dropout", x=x)
  rate = static_number("dropout", "rate", rate, low=0.0, high=1.0)
  if not isinstance(key, jax.Array) or not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or key.dtype == jnp.uint32 and key.shape == (2,)):
    raise TypeError(f"dropout: argument 'key' must be a PRNG key (jax.random.key(seed)), got {key!r:.80}")
  if rate == 0:
    return x
  return _dropout(key, x, rate)


def _dropout_mask(key, x, rate):
  return jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))


def _dropout_fwd(key, x, rate):
  keep = _dropout_mask(key, x, rate)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype), keep


def _dropout_bwd(rate, keep, g):
  return None, jnp.where(keep, g / (1.0 - rate), 0).astype(g.dtype)


def _dropout_ref(key, x, rate):
  if rate == 0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
  return jnp.where(keep, x / (1.0 - rate), 0)


def _dropout_sampler(shape, rates=(0.1, 0.5)):
  def sample(rng, dtype):
    key = jax.random.key(int(rng.integers(0, 2**31)))
    return (key, uniform(rng, shape, dtype)), {"rate": float(rng.choice(rates))}
  return sample


_RATES = {
    "rate > 0": _dropout_sampler((3, 4)),
    "rate 0 (identity)": _dropout_sampler((3, 4), rates=(0.0,)),
    "zero-size": _dropout_sampler((0, 3)),
}


_dropout = vjp_rule(dropout, _dropout_fwd, _dropout_bwd, nondiff_argnums=(2,))
register(dropout, _dropout_ref, any_branch(_RATES), branches=_RATES, note="004")
