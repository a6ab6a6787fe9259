"""Smooth activations of modern networks: softplus, gelu (exact or tanh), silu (swish).

Each is elementwise with a diagonal Jacobian, so its VJP is g times the local derivative. Each keeps
the input x and recomputes the derivative from it: the derivative needs σ(x), Φ(x) or tanh(u), which
are no cheaper to keep than to recompute, and none is a function of the output alone.
"""

import math

import jax
from jax import lax
import jax.numpy as jnp

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._registry import zero_size
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_array


def _shapes(kwargs_of=lambda rng: {}, large_x=False):
  """Branches: any shape (a scalar included) in [−4, 4), an empty array, and with ``large_x`` large
  |x| (±30 to ±1000: where softplus's stable form matters)."""
  def any_shape(rng, dtype):
    return (uniform(rng, random_shape(rng), dtype, -4.0, 4.0),), kwargs_of(rng)

  def large(rng, dtype):
    x = uniform(rng, random_shape(rng, min_rank=1), dtype, 30.0, 1000.0)
    return ((x * rng.choice([-1.0, 1.0], size=x.shape)).astype(dtype),), kwargs_of(rng)

  def empty(rng, dtype):
    return (uniform(rng, zero_size(rng, random_shape(rng, min_rank=1)), dtype),), kwargs_of(rng)

  return {"any shape": any_shape, "zero-size": empty, **({"large |x|": large} if large_x else {})}


_ANY = _shapes()


# ------------------------------------------------------------------------------------------ softplus

def softplus(x: jax.typing.ArrayLike) -> jax.Array:
  """z = log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|).  (Note 004's stable log.)

  Local derivative: σ(x) = 1/(1 + e⁻ˣ). VJP: dx = g · σ(x). The stable form never exponentiates a
  positive number, so z is finite and exact for any |x| (softplus(1000) = 1000, softplus(−1000) = 0
  up to e⁻¹⁰⁰⁰), and σ is ``lax.logistic``, finite everywhere. Residuals: x only.

  Args:
    x: float array of any shape.
  """
  return _softplus(float_array("softplus", "x", x))


def _softplus_fwd(x):
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x))), x


def _softplus_bwd(x, g):
  return (g * lax.logistic(x),)


_softplus = vjp_rule(softplus, _softplus_fwd, _softplus_bwd)
_SOFTPLUS = _shapes(large_x=True)
register(softplus, jax.nn.softplus, any_branch(_SOFTPLUS), branches=_SOFTPLUS, note="004")


# ---------------------------------------------------------------------------------------------- gelu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def gelu(x: jax.typing.ArrayLike, approximate: bool = False) -> jax.Array:
  """The Gaussian error linear unit.  (Note 004's activations, the transformer's choice.)

  Exact: z = x · Φ(x), Φ(x) = ½(1 + erf(x/√2)) the standard normal CDF. Local derivative:
  Φ(x) + x · φ(x), φ(x) = e^(−x²/2)/√(2π). VJP: dx = g · (Φ(x) + x · φ(x)).

  With ``approximate=True`` (the tanh form): z = ½x(1 + t), t = tanh(u), u = √(2/π)(x + 0.044715x³).
  Local derivative: ½(1 + t) + ½x(1 − t²) · √(2/π)(1 + 3·0.044715x²). VJP: dx = g times that.

  Φ(x) is computed as ½·erfc(−x/√2): 1 + erf(x/√2) would cancel for x ≪ 0 (all rounding error in float32
  below x ≈ −5).

  Residuals: x only (Φ and φ, or t, are recomputed from it). Smooth everywhere.

  Args:
    x: float array of any shape.
    approximate: Python bool, the tanh approximation instead of erf. Default False (exact), unlike
      ``jax.nn.gelu``.
  """
  x = float_array("gelu", "x", x)
  if not isinstance(approximate, bool):
    raise TypeError(f"gelu: argument 'approximate' must be a Python bool, got {approximate!r}")
  return _gelu(x, approximate)


def _gelu_of(x, approximate):
  """x·Φ(x), or its tanh approximation."""
  if approximate:
    return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * x ** 3)))
  return 0.5 * x * lax.erfc(-x / math.sqrt(2.0))


def _gelu_fwd(x, approximate):
  return _gelu_of(x, approximate), x


def _gelu_slope(x, approximate):
  """The local derivative of gelu: Φ(x) + x·φ(x), or the tanh form's ½(1 + t) + ½x(1 − t²)·du/dx."""
  if approximate:
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * x ** 3))
    du = _SQRT_2_OVER_PI * (1 + 3 * _CUBIC * x * x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
  cdf = 0.5 * lax.erfc(-x / math.sqrt(2.0))
  pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  return cdf + x * pdf


def _gelu_bwd(approximate, x, g):
  return (g * _gelu_slope(x, approximate),)


def _gelu_ref(x, approximate=False):
  return jax.nn.gelu(x, approximate=approximate)


_GELU = {**{f"{name}, exact": sample for name, sample in _shapes(lambda rng: {"approximate": False}).items()},
         **{f"{name}, tanh": sample for name, sample in _shapes(lambda rng: {"approximate": True}).items()}}


_gelu = vjp_rule(gelu, _gelu_fwd, _gelu_bwd, nondiff_argnums=(1,))
register(gelu, _gelu_ref, any_branch(_GELU), branches=_GELU, note="004")


# ---------------------------------------------------------------------------------------------- silu

def silu(x: jax.typing.ArrayLike) -> jax.Array:
  """z = x · σ(x) (SiLU, swish).  (Note 004's activations, with note 000's sigmoid.)

  Local derivative: σ(x) + x · σ(x)(1 − σ(x)) = σ(x)(1 + x(1 − σ(x))). VJP: dx = g times that.
  Residuals: x only (σ(x) recomputed; the output alone does not determine x). Smooth everywhere.

  Args:
    x: float array of any shape.
  """
  return _silu(float_array("silu", "x", x))


def _silu_fwd(x):
  return x * lax.logistic(x), x


def _silu_slope(x):
  """The local derivative of silu: σ(x)(1 + x(1 − σ(x)))."""
  s = lax.logistic(x)
  return s * (1 + x * (1 - s))


def _silu_bwd(x, g):
  return (g * _silu_slope(x),)


_silu = vjp_rule(silu, _silu_fwd, _silu_bwd)
register(silu, jax.nn.silu, any_branch(_ANY), branches=_ANY, note="000, 004")
