"""Activations (notes 000, 001, 004): elementwise nonlinearities, and softmax along an axis.

An elementwise op has a diagonal Jacobian, so its VJP is the upstream gradient times the local
derivative, elementwise. Each rule keeps whichever of input or output gives that derivative most
cheaply (sigmoid and tanh keep the output, relu a mask).
"""


import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import axis_index
from jaxbp.ops._util import float_array
from jaxbp.ops._util import static_number


def _unary(shape_of, away_from=None, **kwargs):
  """A sampler of (x,) with x of shape ``shape_of(rng)``, values away from ``away_from``, and each
  keyword drawn from its list of values."""
  def sample(rng, dtype):
    x = uniform(rng, shape_of(rng), dtype, low=-3.0, high=3.0, away_from=away_from)
    return (x,), {k: float(rng.choice(v)) for k, v in kwargs.items()}
  return sample


def _unary_branches(away_from=None, **kwargs):
  """The shapes every elementwise rule is proven on: an array and an empty one. Fixed shapes (random
  values), shared by every elementwise rule, so the registry test compiles each once."""
  return {"array": _unary(lambda rng: (2, 3), away_from, **kwargs),
          "zero-size": _unary(lambda rng: (0, 3), away_from, **kwargs)}


def _any_shape(away_from=None, **kwargs):
  """The random sampler of an elementwise rule: an array of rank 0–3."""
  return _unary(random_shape, away_from, **kwargs)


# ---------------------------------------------------------------------------------------------- relu

def relu(x: ArrayLike) -> jax.Array:
  """z = max(0, x).  (Notes 001 and 004.)

  Local derivative: ∂z/∂x = 1[x > 0]. VJP: dx = g · 1[x > 0]: the gradient passes where the unit
  was active and stops where it was not.

  At x = 0 the function has no derivative; the rule takes the subgradient 0, as note 004 advises and
  note 001's indicator 1(x > 0) says (``jax.nn.relu`` makes the same choice).

  Args:
    x: float array of any shape.
  """
  return _relu(float_array("relu", "x", x))


def _relu_fwd(x):
  return jnp.maximum(x, 0), x > 0  # a boolean mask is all the backward needs


def _relu_bwd(active, g):
  return (jnp.where(active, g, 0),)


_relu = vjp_rule(relu, _relu_fwd, _relu_bwd)
_KINKED = _unary_branches(away_from=0.0)
register(relu, jax.nn.relu, _any_shape(away_from=0.0), branches=_KINKED, note="001, 004")


# ---------------------------------------------------------------------------------------- leaky_relu

def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> jax.Array:
  """z = x if x > 0 else negative_slope · x.  (Note 004.)

  Local derivative: 1 where x > 0, ``negative_slope`` elsewhere. VJP: dx = g · (1 if x > 0 else
  negative_slope). At x = 0 the rule takes ``negative_slope``, the same side as relu's choice.

  Args:
    x: float array of any shape.
    negative_slope: Python float, the slope for x ≤ 0.
  """
  x = float_array("leaky_relu", "x", x)
  return _leaky_relu(x, static_number("leaky_relu", "negative_slope", negative_slope))


def _leaky_relu_fwd(x, negative_slope):
  active = x > 0
  return jnp.where(active, x, negative_slope * x), active


def _leaky_relu_bwd(negative_slope, active, g):
  return (jnp.where(active, g, negative_slope * g),)


def _leaky_relu_ref(x, negative_slope=0.01):
  return jax.nn.leaky_relu(x, negative_slope)


_leaky_relu = vjp_rule(leaky_relu, _leaky_relu_fwd, _leaky_relu_bwd, nondiff_argnums=(1,))
_SLOPES = {"away_from": 0.0, "negative_slope": [0.01, 0.2]}
register(leaky_relu, _leaky_relu_ref, _any_shape(**_SLOPES), branches=_unary_branches(**_SLOPES), note="004")


# ----------------------------------------------------------------------------------------------- elu

def elu(x: ArrayLike, alpha: float = 1.0) -> jax.Array:
  """z = x if x > 0 else α(eˣ − 1).  (Note 004.)

  Local derivative: 1 where x > 0, αeˣ = z + α elsewhere. VJP: dx = g · (1 if x > 0 else z + α).
  The rule keeps only the output z: for α ≥ 0, z > 0 exactly where x > 0. At x = 0 it takes α
  (the left derivative; for α = 1 both sides agree).

  Args:
    x: float array of any shape.
    alpha: Python float ≥ 0, the value the function approaches as x → −∞ is −α.
  """
  x = float_array("elu", "x", x)
  return _elu(x, static_number("elu", "alpha", alpha, low=0.0))


def _elu_fwd(x, alpha):
  z = jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))  # min: no overflow in the unused branch
  return z, z


def _elu_bwd(alpha, z, g):
  return (jnp.where(z > 0, g, g * (z + alpha)),)


def _elu_ref(x, alpha=1.0):
  return jax.nn.elu(x, alpha)


_elu = vjp_rule(elu, _elu_fwd, _elu_bwd, nondiff_argnums=(1,))
_ALPHAS = {"away_from": 0.0, "alpha": [1.0, 0.5]}
register(elu, _elu_ref, _any_shape(**_ALPHAS), branches=_unary_branches(**_ALPHAS), note="004")


# ------------------------------------------------------------------------------------------- sigmoid

def sigmoid(x: ArrayLike) -> jax.Array:
  """z = σ(x) = 1 / (1 + e⁻ˣ).  (Notes 000, 001, 004.)

  Local derivative: σ′(x) = z(1 − z). VJP: dx = g · z · (1 − z), note 001's
  ``grad_s3 = grad_L * (1 - L) * L``. The rule keeps only the output z. The forward is
  ``lax.logistic``, finite for any x (σ(±1000) is exactly 1 or 0, and the gradient there is 0).

  Args:
    x: float array of any shape.
  """
  return _sigmoid(float_array("sigmoid", "x", x))


def _sigmoid_fwd(x):
  z = jax.lax.logistic(x)
  return z, z


def _sigmoid_bwd(z, g):
  return (g * z * (1 - z),)


_sigmoid = vjp_rule(sigmoid, _sigmoid_fwd, _sigmoid_bwd)
_SMOOTH = _unary_branches()
register(sigmoid, jax.nn.sigmoid, _any_shape(), branches=_SMOOTH, note="000, 001, 004")


# ---------------------------------------------------------------------------------------------- tanh

def tanh(x: ArrayLike) -> jax.Array:
  """z = tanh(x).  (Note 004.)

  Local derivative: 1 − z². VJP: dx = g · (1 − z²). The rule keeps only the output z.

  Args:
    x: float array of any shape.
  """
  return _tanh(float_array("tanh", "x", x))


def _tanh_fwd(x):
  z = jnp.tanh(x)
  return z, z


def _tanh_bwd(z, g):
  return (g * (1 - z * z),)


_tanh = vjp_rule(tanh, _tanh_fwd, _tanh_bwd)
register(tanh, jnp.tanh, _any_shape(), branches=_SMOOTH, note="004")


# ------------------------------------------------------------------------------- softmax, log_softmax

def _stable_log_softmax(x: jax.Array, axis: int) -> jax.Array:
  """log softmax(x) along ``axis`` with the max subtracted first (log-sum-exp; note 004).

  A building block of several rules' forwards (log_softmax, softmax_cross_entropy), not a rule. The max
  starts from −∞, so an axis of length 0 gives an empty result as ``jax.nn.log_softmax`` does.
  """
  shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf))
  return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def softmax(x: ArrayLike, axis: int = -1) -> jax.Array:
  """zᵢ = e^{xᵢ} / Σⱼ e^{xⱼ} along ``axis``.  (Note 004.)

  Local Jacobian (per slice): ∂zᵢ/∂xⱼ = zᵢ(δᵢⱼ − zⱼ), i.e. diag(z) − z zᵀ. VJP (it is symmetric):
  dx = z ⊙ (g − Σⱼ gⱼ zⱼ). The forward subtracts the maximum first (note 004's stable softmax), so
  logits near ±1e4 give finite values. The rule keeps only the output z. An axis of length 0 gives
  an empty result (as ``jax.nn.softmax`` does).

  Args:
    x: float array with at least one axis.
    axis: the axis the probabilities sum to 1 along.
  """
  x = float_array("softmax", "x", x)
  return _softmax(x, axis_index("softmax", "axis", axis, x.shape))


def _softmax_fwd(x, axis):
  e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf)))
  z = e / jnp.sum(e, axis=axis, keepdims=True)
  return z, z


def _softmax_bwd(axis, z, g):
  return (z * (g - jnp.sum(g * z, axis=axis, keepdims=True)),)


def _with_axis(shape):
  def sample(rng, dtype):
    x = uniform(rng, shape, dtype, low=-4.0, high=4.0)
    return (x,), {"axis": int(rng.integers(-len(shape), len(shape)))}
  return sample


_AXES = {
    "rank 1": _with_axis((4,)),
    "rank 3, any axis": _with_axis((2, 3, 4)),
    "an empty axis": _with_axis((3, 0)),
}
_softmax = vjp_rule(softmax, _softmax_fwd, _softmax_bwd, nondiff_argnums=(1,))
register(softmax, jax.nn.softmax, any_branch(_AXES), branches=_AXES, note="004")


def log_softmax(x: ArrayLike, axis: int = -1) -> jax.Array:
  """zᵢ = xᵢ − log Σⱼ e^{xⱼ} along ``axis``, with the max subtracted (log-sum-exp).  (Note 004.)

  Local Jacobian (per slice): ∂zᵢ/∂xⱼ = δᵢⱼ − softmax(x)ⱼ. VJP: dx = g − softmax(x) · Σⱼ gⱼ, with
  softmax(x) = e^z recovered from the saved output, never as log of a computed softmax.

  Args:
    x: float array with at least one axis.
    axis: the axis to normalise along.
  """
  x = float_array("log_softmax", "x", x)
  return _log_softmax(x, axis_index("log_softmax", "axis", axis, x.shape))


def _log_softmax_fwd(x, axis):
  z = _stable_log_softmax(x, axis)
  return z, z


def _log_softmax_bwd(axis, z, g):
  return (g - jnp.exp(z) * jnp.sum(g, axis=axis, keepdims=True),)


_log_softmax = vjp_rule(log_softmax, _log_softmax_fwd, _log_softmax_bwd, nondiff_argnums=(1,))
register(log_softmax, jax.nn.log_softmax, any_branch(_AXES), branches=_AXES, note="004")
