"""The remaining elementwise gates of any expression: subtract, negative, divide, power, exp, log, sqrt.

With note 001's add, multiply and max gates these cover the arithmetic of note 002's homework
``(w1·x·x + w2·x + b − y)²``, so a trace of it runs on hand-written rules only. Each Jacobian is
diagonal, so each VJP is the upstream gradient times the local derivative, elementwise; the binary
gates broadcast like NumPy and sum their cotangents back over broadcast axes (``unbroadcast``).

At the points where a derivative does not exist or is infinite (x = 0 for log, sqrt and fractional
powers, y = 0 for divide) each rule returns what the formula gives in IEEE arithmetic, the same value
as ``jax.grad`` of its reference, and its docstring says which.
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import broadcastable_to
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._registry import zero_size
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import broadcast_shape
from jaxbp.ops._util import broadcastable_floats
from jaxbp.ops._util import float_array
from jaxbp.ops._util import shape_dtype
from jaxbp.ops._util import unbroadcast


def _pair_forms(low=-2.0, high=2.0, away_from=None):
  """Branches of a binary gate: equal shapes, y broadcast to x, x broadcast to y, an empty axis;
  y drawn from [low, high) (away from ``away_from``)."""
  def pair(shapes_of):
    def sample(rng, dtype):
      shape, other = shapes_of(rng)
      return (uniform(rng, shape, dtype), uniform(rng, other, dtype, low, high, away_from, gap=0.5)), {}
    return sample

  def one_side(rng):
    shape = random_shape(rng, min_rank=1)
    return shape, broadcastable_to(rng, shape)

  return {"same shape": pair(lambda rng: (random_shape(rng),) * 2), "y broadcast to x": pair(one_side),
          "x broadcast to y": pair(lambda rng: one_side(rng)[::-1]),
          "zero-size": pair(lambda rng: (zero_size(rng, random_shape(rng, min_rank=1)),) * 2)}


def _unary_forms(low=-2.0, high=2.0):
  """Branches of a unary op: any shape (a scalar included), and an empty array."""
  return {"any shape": lambda rng, dtype: ((uniform(rng, random_shape(rng), dtype, low, high),), {}),
          "zero-size": lambda rng, dtype: ((uniform(rng, zero_size(rng, random_shape(rng, min_rank=1)), dtype,
                                                    low, high),), {})}


# ------------------------------------------------------------------------------------------ subtract

def subtract(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> jax.Array:
  """z = x − y, broadcasting.  (Note 001's add gate, with a sign; note 002's homework.)

  Local Jacobians: ∂z/∂x = I, ∂z/∂y = −I. VJP: dx = g, dy = −g, each summed over the axes its input
  was broadcast along. Residuals: none (only the inputs' shapes and dtypes, which are static).

  Args:
    x: float array, broadcastable with ``y``.
    y: float array, broadcastable with ``x``.
  """
  x, y = broadcastable_floats("subtract", x=x, y=y)
  return _subtract(x, y, shape_dtype(x), shape_dtype(y))


def _subtract_fwd(x, y, x_meta, y_meta):
  return jnp.subtract(x, y), None  # only the shapes, which are static


def _subtract_bwd(x_meta, y_meta, _, g):
  dx = unbroadcast(g, *x_meta)
  dy = unbroadcast(-g, *y_meta)
  return dx, dy


_subtract = vjp_rule(subtract, _subtract_fwd, _subtract_bwd, nondiff_argnums=(2, 3))
_SUBTRACT = mixed_dtypes(_pair_forms())
register(subtract, jnp.subtract, any_branch(_SUBTRACT), branches=_SUBTRACT, note="001, 002")


# ------------------------------------------------------------------------------------------ negative

def negative(x: jax.typing.ArrayLike) -> jax.Array:
  """z = −x.  (Note 001's gates.)

  Local Jacobian: −I. VJP: dx = −g. Residuals: none.

  Args:
    x: float array of any shape.
  """
  return _negative(float_array("negative", "x", x))


def _negative_fwd(x):
  return jnp.negative(x), None


def _negative_bwd(_, g):
  return (-g,)


_negative = vjp_rule(negative, _negative_fwd, _negative_bwd)
_ANY = _unary_forms()
register(negative, jnp.negative, any_branch(_ANY), branches=_ANY, note="001")


# -------------------------------------------------------------------------------------------- divide

def divide(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> jax.Array:
  """z = x / y elementwise, broadcasting.  (Note 001's gates.)

  Local Jacobians: ∂z/∂x = diag(1/y), ∂z/∂y = diag(−x/y²) = diag(−z/y). VJP: dx = g / y,
  dy = −g · z / y, each summed back over broadcast axes. Residuals: y and the output z (dy reuses
  z = x/y instead of squaring y).

  At y = 0 there is no derivative: z is ±inf (or NaN for 0/0) and so are dx and dy, the values
  IEEE arithmetic gives and ``jax.grad`` of ``jnp.divide`` gives too.

  Args:
    x: float array, broadcastable with ``y``.
    y: float array, broadcastable with ``x``.
  """
  x, y = broadcastable_floats("divide", x=x, y=y)
  return _divide(x, y, shape_dtype(x))


class _DivideResiduals(NamedTuple):
  y: jax.Array  # the divisor: dx = g/y, dy = −g·z/y
  z: jax.Array  # the output x/y (alive anyway): dy = −g·z/y without recomputing x/y


def _divide_fwd(x, y, x_meta):
  z = jnp.divide(x, y)
  return z, _DivideResiduals(y, z)


def _divide_bwd(x_meta, res, g):
  y, z = res
  dx = unbroadcast(g / y, *x_meta)
  dy = unbroadcast(-g * z / y, *shape_dtype(y))
  return dx, dy


_divide = vjp_rule(divide, _divide_fwd, _divide_bwd, nondiff_argnums=(2,))
_DIVIDE = mixed_dtypes(_pair_forms(away_from=0.0))
register(divide, jnp.divide, any_branch(_DIVIDE), branches=_DIVIDE, note="001")


# --------------------------------------------------------------------------------------------- power

def power(x: jax.typing.ArrayLike, p) -> jax.Array:
  """z = xᵖ elementwise; p a Python number or a float array broadcastable with x.  (Note 002's
  homework ``(…)**2``.)

  Local Jacobians: ∂z/∂x = p · xᵖ⁻¹; for an array exponent also ∂z/∂p = xᵖ · log x.
  VJP: dx = g · p · xᵖ⁻¹, dp = g · z · log x, summed back over broadcast axes.

  A Python integer p is an integer power (``lax.integer_pow``): defined for negative x, and
  dx = g · p · x^(p−1) by repeated multiplication. Any other Python number or an array p uses
  ``lax.pow``, which is NaN for negative x with a non-integer p (and so is the gradient).

  Choices at x = 0:

  p = 0: z = 1 and dx = 0 (z is the constant 1), not 0 · 0⁻¹ = NaN. Here the rule departs from
  ``jax.grad`` of ``jnp.power``, which gives NaN for a float or array exponent 0.

  0 < p < 1 (e.g. ½): dx = +inf, the limit of the one-sided derivative. p = 1: dx = g.
  p > 1: dx = 0. p < 0: z = inf and dx = ∓inf, as IEEE arithmetic gives (and jax.grad).

  dp at x = 0 is 0 (log 0 replaced by 0: z · log x → 0 as x → 0⁺ for p > 0), as jax.grad.

  Residuals: x and z for an array exponent (and p); x alone for a Python exponent.

  Args:
    x: float array of any shape.
    p: a Python int or float (static: no gradient), or a float array broadcastable with x.
  """
  x = float_array("power", "x", x)
  if isinstance(p, bool) or not isinstance(p, (numbers.Real, jax.Array, np.ndarray)):
    raise TypeError(f"power: argument 'p' must be a Python number or a float array, got {type(p).__name__}")
  if isinstance(p, numbers.Real):
    static = int(p) if isinstance(p, numbers.Integral) else float(p)
    return _power(x, None, (shape_dtype(x), static))
  p = float_array("power", "p", p)
  broadcast_shape("power", x=x, p=p)
  return _power(x, p, (shape_dtype(x), None))


def _integer_or_real_power(x, p, static):
  """xᵖ: ``lax.integer_pow`` for a Python int, else ``jnp.power`` (a Python float in x's dtype)."""
  if p is not None:
    return jnp.power(x, p)
  if isinstance(static, int):
    return jax.lax.integer_pow(x, static)
  return jnp.power(x, jnp.asarray(static, jnp.result_type(x)))


class _PowerResiduals(NamedTuple):
  x: jax.Array         # the base: dx = g·p·x^(p−1), and log x in dp
  p: jax.Array | None  # the array exponent (None for a Python one, which is static)
  z: jax.Array | None  # the output x^p, for dp = g·z·log x (None for a Python exponent: x alone suffices)


def _power_fwd(x, p, meta):
  """One rule for both exponents: ``p`` is the array exponent or None, ``meta[1]`` the Python one."""
  z = _integer_or_real_power(x, p, meta[1])
  return z, _PowerResiduals(x, p, z if p is not None else None)


def _power_bwd(meta, res, g):
  x_meta, static = meta
  x, p, z = res
  if p is None:  # dx = g · p · x^(p−1), one more power from x; p = 0: the constant 1, dx = 0
    if static == 0:
      return jnp.zeros_like(g), None
    return g * static * _integer_or_real_power(x, None, static - 1), None
  slope = jnp.where(p == 0, 0, p * jnp.power(x, p - 1))
  log_x = jnp.log(jnp.where(x == 0, 1, x))  # dp = 0 at x = 0
  dx = unbroadcast(g * slope, *x_meta)
  dp = unbroadcast(g * z * log_x, *shape_dtype(p))
  return dx, dp


def _power_ref(x, p):
  return jnp.power(x, p)


def _power_forms():
  """A Python int (any sign of x), a Python float (x > 0), an array exponent (x > 0), an empty x."""
  def python_int(rng, dtype):
    return (uniform(rng, random_shape(rng), dtype), int(rng.choice([0, 1, 2, 3, -1]))), {}

  def python_float(rng, dtype):
    return (uniform(rng, random_shape(rng), dtype, 0.5, 2.0), float(rng.choice([0.5, 1.5, -0.5]))), {}

  def array(rng, dtype):
    shape = random_shape(rng)
    return (uniform(rng, shape, dtype, 0.5, 2.0), uniform(rng, broadcastable_to(rng, shape), dtype)), {}

  def empty(rng, dtype):
    return (uniform(rng, zero_size(rng, random_shape(rng, min_rank=1)), dtype, 0.5, 2.0), 2), {}

  return {"python int": python_int, "python float": python_float, "array exponent": array, "zero-size": empty}


_POWER = mixed_dtypes(_power_forms(), "array exponent")
_power = vjp_rule(power, _power_fwd, _power_bwd, nondiff_argnums=(2,))
register(power, _power_ref, any_branch(_POWER), branches=_POWER, note="002")


# ----------------------------------------------------------------------------------- exp, log, sqrt

def exp(x: jax.typing.ArrayLike) -> jax.Array:
  """z = eˣ.  (Note 000's sigmoid is built of it.)

  Local derivative: eˣ = z. VJP: dx = g · z. Residuals: the output z only.

  Args:
    x: float array of any shape.
  """
  return _exp(float_array("exp", "x", x))


def _exp_fwd(x):
  z = jnp.exp(x)
  return z, z


def _exp_bwd(z, g):
  return (g * z,)


_exp = vjp_rule(exp, _exp_fwd, _exp_bwd)
register(exp, jnp.exp, any_branch(_ANY), branches=_ANY, note="000")


def log(x: jax.typing.ArrayLike) -> jax.Array:
  """z = ln x.  (Note 004's stable log.)

  Local derivative: 1/x. VJP: dx = g / x. Residuals: x only.

  At x = 0, z = −inf and dx = g/0 = ±inf; for x < 0, z and dx are NaN: the values IEEE arithmetic
  gives, the same as ``jax.grad`` of ``jnp.log``.

  Args:
    x: float array of any shape.
  """
  return _log(float_array("log", "x", x))


def _log_fwd(x):
  return jnp.log(x), x


def _log_bwd(x, g):
  return (g / x,)


_log = vjp_rule(log, _log_fwd, _log_bwd)
_POSITIVE = _unary_forms(low=0.2, high=3.0)
register(log, jnp.log, any_branch(_POSITIVE), branches=_POSITIVE, note="004")


def sqrt(x: jax.typing.ArrayLike) -> jax.Array:
  """z = √x.  (Note 004's batch norm divides by one.)

  Local derivative: 1/(2√x) = 1/(2z). VJP: dx = g / (2z). Residuals: the output z only.

  At x = 0, z = 0 and dx = +inf (for g > 0), the limit of the one-sided derivative, as ``jax.grad``
  of ``jnp.sqrt`` gives; for x < 0, NaN.

  Args:
    x: float array of any shape.
  """
  return _sqrt(float_array("sqrt", "x", x))


def _sqrt_fwd(x):
  z = jnp.sqrt(x)
  return z, z


def _sqrt_bwd(z, g):
  return (g / (2 * z),)


_sqrt = vjp_rule(sqrt, _sqrt_fwd, _sqrt_bwd)
register(sqrt, jnp.sqrt, any_branch(_POSITIVE), branches=_POSITIVE, note="004")
