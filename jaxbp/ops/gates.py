"""The gates of note 001's table: add distributes, multiply swaps, max routes.

Each op broadcasts its arguments like NumPy; the backward sums the cotangent back to each input's
shape (``unbroadcast``), because an input copied to several outputs receives the sum of their gradients.
"""


from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import broadcastable_floats
from jaxbp.ops._util import shape_dtype
from jaxbp.ops._util import unbroadcast


def _pair(x_shape, y_shape, gap=None):
  """A sampler of (x, y) of these shapes; with ``gap``, y kept apart from x."""
  def sample(rng, dtype):
    x, y = uniform(rng, x_shape, dtype), uniform(rng, y_shape, dtype)
    if gap is not None:  # keep x and y apart, away from max's tie
      y = (y + gap * np.sign(y - x + 1e-9)).astype(dtype)
    return (x, y), {}
  return sample


def _broadcast_forms(gap=None):
  """Every broadcast form a gate meets: equal shapes, each side broadcast to the other (a leading axis
  added and a unit axis stretched), a unit axis stretched on both sides at once, a scalar, and an empty
  axis. Fixed shapes (random values), so the registry test compiles each once."""
  forms = {
      "same shape": ((2, 3), (2, 3)),
      "y broadcast to x": ((2, 3, 4), (3, 1)),
      "x broadcast to y": ((3, 1), (2, 3, 4)),
      "both stretched": ((2, 1), (1, 3)),
      "scalar and array": ((), (2, 3)),
      "zero-size": ((0, 3), (3,)),
  }
  return {name: _pair(*shapes, gap=gap) for name, shapes in forms.items()}


_FORMS = mixed_dtypes(_broadcast_forms())


# ----------------------------------------------------------------------------------------------- add

def add(x: ArrayLike, y: ArrayLike) -> jax.Array:
  """z = x + y, broadcasting.  (Note 001, the add gate.)

  Local Jacobians: ∂z/∂x = I, ∂z/∂y = I. VJP: dx = g, dy = g, each summed over the axes its input
  was broadcast along: the add gate hands the upstream gradient unchanged to both inputs.

  Args:
    x: float array, broadcastable with ``y``.
    y: float array, broadcastable with ``x``.
  """
  x, y = broadcastable_floats("add", x=x, y=y)
  return _add(x, y, shape_dtype(x), shape_dtype(y))


def _add_fwd(x, y, x_meta, y_meta):
  return jnp.add(x, y), None  # the gradient of a sum needs no residual, only the shapes (static)


def _add_bwd(x_meta, y_meta, _, g):
  dx = unbroadcast(g, *x_meta)
  dy = unbroadcast(g, *y_meta)
  return dx, dy


_add = vjp_rule(add, _add_fwd, _add_bwd, nondiff_argnums=(2, 3))
register(add, jnp.add, any_branch(_FORMS), branches=_FORMS, note="001")


# ------------------------------------------------------------------------------------------ multiply

def multiply(x: ArrayLike, y: ArrayLike) -> jax.Array:
  """z = x · y elementwise, broadcasting.  (Note 001, the multiply gate.)

  Local Jacobians: ∂z/∂x = diag(y), ∂z/∂y = diag(x). VJP: dx = g · y, dy = g · x, summed back over
  broadcast axes: the multiply gate swaps its inputs (note 001's ``grad_w0 = grad_s0 * x0``).

  Args:
    x: float array, broadcastable with ``y``.
    y: float array, broadcastable with ``x``.
  """
  x, y = broadcastable_floats("multiply", x=x, y=y)
  return _multiply(x, y)


class _Operands(NamedTuple):
  x: jax.Array  # both inputs (no new buffers), each with its own shape and dtype for unbroadcast:
  y: jax.Array  # multiply's dx = g·y, dy = g·x; maximum's route is decided by x > y


def _multiply_fwd(x, y):
  return jnp.multiply(x, y), _Operands(x, y)  # each input's gradient is the other input


def _multiply_bwd(res, g):
  x, y = res
  dx = unbroadcast(g * y, *shape_dtype(x))
  dy = unbroadcast(g * x, *shape_dtype(y))
  return dx, dy


_multiply = vjp_rule(multiply, _multiply_fwd, _multiply_bwd)
register(multiply, jnp.multiply, any_branch(_FORMS), branches=_FORMS, note="001")


# ------------------------------------------------------------------------------------------- maximum

def maximum(x: ArrayLike, y: ArrayLike) -> jax.Array:
  """z = max(x, y) elementwise, broadcasting.  (Note 001, the max gate.)

  Local Jacobians: ∂z/∂x = diag(1[x > y]), ∂z/∂y = diag(1[x ≤ y]). VJP: dx = g · 1[x > y],
  dy = g · 1[x ≤ y]: the max gate routes the whole gradient to the larger input.

  At a tie (x == y) the function has no derivative. Following note 001's indicator 1(x > y) for x,
  the whole gradient goes to ``y``, so it is routed, never split or lost (``jnp.maximum``'s own
  derivative splits it half and half instead).

  Args:
    x: float array, broadcastable with ``y``.
    y: float array, broadcastable with ``x``.
  """
  x, y = broadcastable_floats("maximum", x=x, y=y)
  return _maximum(x, y)


def _maximum_fwd(x, y):
  return jnp.maximum(x, y), _Operands(x, y)  # the comparison decides the route


def _maximum_bwd(res, g):
  x, y = res
  x_wins = x > y
  dx = unbroadcast(jnp.where(x_wins, g, 0), *shape_dtype(x))
  dy = unbroadcast(jnp.where(x_wins, 0, g), *shape_dtype(y))
  return dx, dy


_maximum = vjp_rule(maximum, _maximum_fwd, _maximum_bwd)
_APART = mixed_dtypes(_broadcast_forms(gap=0.2))
register(maximum, jnp.maximum, any_branch(_APART), branches=_APART, note="001")
