"""Smooth activations of modern networks: softplus, gelu (exact or tanh), silu (swish).

Each is elementwise with a diagonal Jacobian, so its VJP is g times the local derivative. Each keeps
the input x and recomputes the derivative from it: the derivative needs σ(x), Φ(x) or tanh(u), which
are no cheaper to keep than to recompute, and none is a function of the output alone.
"""

import functools
import math

import jax
from jax import lax
import jax.numpy as jnp

from jaxbp.ops._registry import draw
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import register
from jaxbp.ops._util import require_float


def _sample_unary(rng, dtype):
  return (draw(rng, random_shape(rng), dtype, low=-4.0, high=4.0),), {}


# ------------------------------------------------------------------------------------------ softplus

def softplus(x: jax.typing.ArrayLike) -> jax.Array:
  """z = log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|).  (Note 004's stable log.)

  Local derivative: σ(x) = 1/(1 + e⁻ˣ). VJP: dx = g · σ(x). The stable form never exponentiates a
  positive number, so z is finite and exact for any |x| (softplus(1000) = 1000, softplus(−1000) = 0
  up to e⁻¹⁰⁰⁰), and σ is ``lax.logistic``, finite everywhere. Residuals: x only.

  Args:
    x: float array of any shape.
  """
  require_float("softplus", "x", x)
  return _softplus(x)


def _softplus_forward(x):
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@jax.custom_vjp
def _softplus(x):
  return _softplus_forward(x)


def _softplus_fwd(x):
  return _softplus_forward(x), x


def _softplus_bwd(x, g):
  return (g * lax.logistic(x),)


_softplus.defvjp(_softplus_fwd, _softplus_bwd)
register(softplus, jax.nn.softplus, _sample_unary, note="004")


# ---------------------------------------------------------------------------------------------- gelu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def gelu(x: jax.typing.ArrayLike, approximate: bool = False) -> jax.Array:
  """The Gaussian error linear unit.  (Note 004's activations, the transformer's choice.)

  Exact: z = x · Φ(x), Φ(x) = ½(1 + erf(x/√2)) the standard normal CDF. Local derivative:
  Φ(x) + x · φ(x), φ(x) = e^(−x²/2)/√(2π). VJP: dx = g · (Φ(x) + x · φ(x)).

  With ``approximate=True`` (the tanh form): z = ½x(1 + t), t = tanh(u), u = √(2/π)(x + 0.044715x³).
  Local derivative: ½(1 + t) + ½x(1 − t²) · √(2/π)(1 + 3·0.044715x²). VJP: dx = g times that.

  Residuals: x only (Φ and φ, or t, are recomputed from it). Smooth everywhere.

  Args:
    x: float array of any shape.
    approximate: Python bool, the tanh approximation instead of erf. Default False (exact), unlike
      ``jax.nn.gelu``.
  """
  require_float("gelu", "x", x)
  if not isinstance(approximate, bool):
    raise TypeError(f"gelu: argument 'approximate' must be a Python bool, got {approximate!r}")
  return _gelu(x, approximate)


def _gelu_forward(x, approximate):
  if approximate:
    return 0.5 * x * (1 + jnp.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * x ** 3)))
  return 0.5 * x * (1 + lax.erf(x / math.sqrt(2.0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gelu(x, approximate):
  return _gelu_forward(x, approximate)


def _gelu_fwd(x, approximate):
  return _gelu_forward(x, approximate), x


def _gelu_bwd(approximate, x, g):
  if approximate:
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * x ** 3))
    du = _SQRT_2_OVER_PI * (1 + 3 * _CUBIC * x * x)
    return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)
  cdf = 0.5 * (1 + lax.erf(x / math.sqrt(2.0)))
  pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  return (g * (cdf + x * pdf),)


def _gelu_ref(x, approximate=False):
  return jax.nn.gelu(x, approximate=approximate)


def _sample_gelu(rng, dtype):
  (x,), _ = _sample_unary(rng, dtype)
  return (x,), {"approximate": bool(rng.random() < 0.5)}


_gelu.defvjp(_gelu_fwd, _gelu_bwd)
register(gelu, _gelu_ref, _sample_gelu, note="004")


# ---------------------------------------------------------------------------------------------- silu

def silu(x: jax.typing.ArrayLike) -> jax.Array:
  """z = x · σ(x) (SiLU, swish).  (Note 004's activations, with note 000's sigmoid.)

  Local derivative: σ(x) + x · σ(x)(1 − σ(x)) = σ(x)(1 + x(1 − σ(x))). VJP: dx = g times that.
  Residuals: x only (σ(x) recomputed; the output alone does not determine x). Smooth everywhere.

  Args:
    x: float array of any shape.
  """
  require_float("silu", "x", x)
  return _silu(x)


@jax.custom_vjp
def _silu(x):
  return x * lax.logistic(x)


def _silu_fwd(x):
  return x * lax.logistic(x), x


def _silu_bwd(x, g):
  s = lax.logistic(x)
  return (g * s * (1 + x * (1 - s)),)


_silu.defvjp(_silu_fwd, _silu_bwd)
register(silu, jax.nn.silu, _sample_unary, note="000, 004")
