"""Activations (notes 000, 001, 004): elementwise nonlinearities, and softmax along an axis.

An elementwise op has a diagonal Jacobian, so its VJP is the upstream gradient times the local
derivative, elementwise. Each rule keeps whichever of input or output gives that derivative most
cheaply (sigmoid and tanh keep the output, relu a mask).
"""

import functools

import jax
import jax.numpy as jnp

from jaxbp.ops._registry import draw
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import register
from jaxbp.ops._util import require_float


def _sample_unary(rng, dtype, away_from=None):
  return (draw(rng, random_shape(rng), dtype, low=-3.0, high=3.0, away_from=away_from),), {}


_sample_kinked = functools.partial(_sample_unary, away_from=0.0)


# ---------------------------------------------------------------------------------------------- relu

def relu(x):
  """z = max(0, x).  (Notes 001 and 004.)

  Local derivative: ∂z/∂x = 1[x > 0]. VJP: dx = g · 1[x > 0]: the gradient passes where the unit
  was active and stops where it was not.

  At x = 0 the function has no derivative; the rule takes the subgradient 0, as note 004 advises and
  note 001's indicator 1(x > 0) says (``jax.nn.relu`` makes the same choice).

  Args:
    x: float array of any shape.
  """
  require_float("relu", "x", x)
  return _relu(x)


@jax.custom_vjp
def _relu(x):
  return jnp.maximum(x, 0)


def _relu_fwd(x):
  return jnp.maximum(x, 0), x > 0  # a boolean mask is all the backward needs


def _relu_bwd(active, g):
  return (jnp.where(active, g, 0),)


_relu.defvjp(_relu_fwd, _relu_bwd)
register(relu, jax.nn.relu, _sample_kinked, note="001, 004")


# ---------------------------------------------------------------------------------------- leaky_relu

def leaky_relu(x, negative_slope=0.01):
  """z = x if x > 0 else negative_slope · x.  (Note 004.)

  Local derivative: 1 where x > 0, ``negative_slope`` elsewhere. VJP: dx = g · (1 if x > 0 else
  negative_slope). At x = 0 the rule takes ``negative_slope``, the same side as relu's choice.

  Args:
    x: float array of any shape.
    negative_slope: Python float, the slope for x ≤ 0.
  """
  require_float("leaky_relu", "x", x)
  return _leaky_relu(x, float(negative_slope))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _leaky_relu(x, negative_slope):
  return jnp.where(x > 0, x, negative_slope * x)


def _leaky_relu_fwd(x, negative_slope):
  return _leaky_relu(x, negative_slope), x > 0


def _leaky_relu_bwd(negative_slope, active, g):
  return (jnp.where(active, g, negative_slope * g),)


def _leaky_relu_ref(x, negative_slope=0.01):
  return jax.nn.leaky_relu(x, negative_slope)


def _sample_leaky(rng, dtype):
  (x,), _ = _sample_kinked(rng, dtype)
  return (x,), {"negative_slope": float(rng.choice([0.01, 0.2]))}


_leaky_relu.defvjp(_leaky_relu_fwd, _leaky_relu_bwd)
register(leaky_relu, _leaky_relu_ref, _sample_leaky, note="004")


# ----------------------------------------------------------------------------------------------- elu

def elu(x, alpha=1.0):
  """z = x if x > 0 else α(eˣ − 1).  (Note 004.)

  Local derivative: 1 where x > 0, αeˣ = z + α elsewhere. VJP: dx = g · (1 if x > 0 else z + α).
  The rule keeps only the output z: for α ≥ 0, z > 0 exactly where x > 0. At x = 0 it takes α
  (the left derivative; for α = 1 both sides agree).

  Args:
    x: float array of any shape.
    alpha: Python float ≥ 0, the value the function approaches as x → −∞ is −α.
  """
  require_float("elu", "x", x)
  if not alpha >= 0:
    raise ValueError(f"elu: argument 'alpha' must be >= 0, got {alpha!r}")
  return _elu(x, float(alpha))


def _elu_forward(x, alpha):
  return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))  # min: no overflow in the unused branch


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _elu(x, alpha):
  return _elu_forward(x, alpha)


def _elu_fwd(x, alpha):
  z = _elu_forward(x, alpha)
  return z, z


def _elu_bwd(alpha, z, g):
  return (jnp.where(z > 0, g, g * (z + alpha)),)


def _elu_ref(x, alpha=1.0):
  return jax.nn.elu(x, alpha)


def _sample_elu(rng, dtype):
  (x,), _ = _sample_kinked(rng, dtype)
  return (x,), {"alpha": float(rng.choice([1.0, 0.5]))}


_elu.defvjp(_elu_fwd, _elu_bwd)
register(elu, _elu_ref, _sample_elu, note="004")


# ------------------------------------------------------------------------------------------- sigmoid

def sigmoid(x):
  """z = σ(x) = 1 / (1 + e⁻ˣ).  (Notes 000, 001, 004.)

  Local derivative: σ′(x) = z(1 − z). VJP: dx = g · z · (1 − z), note 001's
  ``grad_s3 = grad_L * (1 - L) * L``. The rule keeps only the output z. The forward is
  ``lax.logistic``, finite for any x (σ(±1000) is exactly 1 or 0, and the gradient there is 0).

  Args:
    x: float array of any shape.
  """
  require_float("sigmoid", "x", x)
  return _sigmoid(x)


@jax.custom_vjp
def _sigmoid(x):
  return jax.lax.logistic(x)


def _sigmoid_fwd(x):
  z = jax.lax.logistic(x)
  return z, z


def _sigmoid_bwd(z, g):
  return (g * z * (1 - z),)


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)
register(sigmoid, jax.nn.sigmoid, _sample_unary, note="000, 001, 004")


# ---------------------------------------------------------------------------------------------- tanh

def tanh(x):
  """z = tanh(x).  (Note 004.)

  Local derivative: 1 − z². VJP: dx = g · (1 − z²). The rule keeps only the output z.

  Args:
    x: float array of any shape.
  """
  require_float("tanh", "x", x)
  return _tanh(x)


@jax.custom_vjp
def _tanh(x):
  return jnp.tanh(x)


def _tanh_fwd(x):
  z = jnp.tanh(x)
  return z, z


def _tanh_bwd(z, g):
  return (g * (1 - z * z),)


_tanh.defvjp(_tanh_fwd, _tanh_bwd)
register(tanh, jnp.tanh, _sample_unary, note="004")


# ------------------------------------------------------------------------------- softmax, log_softmax

def _check_axis(op, x, axis):
  ndim = jnp.ndim(x)
  if not isinstance(axis, int) or not -ndim <= axis < ndim:
    raise ValueError(f"{op}: argument 'axis' must be an int in [{-ndim}, {ndim}) for x of shape "
                     f"{jnp.shape(x)}, got {axis!r}")
  return axis % ndim


def softmax(x, axis=-1):
  """zᵢ = e^{xᵢ} / Σⱼ e^{xⱼ} along ``axis``.  (Note 004.)

  Local Jacobian (per slice): ∂zᵢ/∂xⱼ = zᵢ(δᵢⱼ − zⱼ), i.e. diag(z) − z zᵀ. VJP (it is symmetric):
  dx = z ⊙ (g − Σⱼ gⱼ zⱼ). The forward subtracts the maximum first (note 004's stable softmax), so
  logits near ±1e4 give finite values. The rule keeps only the output z.

  Args:
    x: float array with at least one axis.
    axis: the axis the probabilities sum to 1 along.
  """
  require_float("softmax", "x", x)
  return _softmax(x, _check_axis("softmax", x, axis))


def _softmax_forward(x, axis):
  e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
  return e / jnp.sum(e, axis=axis, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(x, axis):
  return _softmax_forward(x, axis)


def _softmax_fwd(x, axis):
  z = _softmax_forward(x, axis)
  return z, z


def _softmax_bwd(axis, z, g):
  return (z * (g - jnp.sum(g * z, axis=axis, keepdims=True)),)


def _sample_with_axis(rng, dtype):
  shape = random_shape(rng, max_rank=3)
  shape = shape if shape else (3,)
  x = draw(rng, shape, dtype, low=-4.0, high=4.0)
  return (x,), {"axis": int(rng.integers(-len(shape), len(shape)))}


_softmax.defvjp(_softmax_fwd, _softmax_bwd)
register(softmax, jax.nn.softmax, _sample_with_axis, note="004")


def log_softmax(x, axis=-1):
  """zᵢ = xᵢ − log Σⱼ e^{xⱼ} along ``axis``, with the max subtracted (log-sum-exp).  (Note 004.)

  Local Jacobian (per slice): ∂zᵢ/∂xⱼ = δᵢⱼ − softmax(x)ⱼ. VJP: dx = g − softmax(x) · Σⱼ gⱼ, with
  softmax(x) = e^z recovered from the saved output, never as log of a computed softmax.

  Args:
    x: float array with at least one axis.
    axis: the axis to normalise along.
  """
  require_float("log_softmax", "x", x)
  return _log_softmax(x, _check_axis("log_softmax", x, axis))


def _log_softmax_forward(x, axis):
  shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _log_softmax(x, axis):
  return _log_softmax_forward(x, axis)


def _log_softmax_fwd(x, axis):
  z = _log_softmax_forward(x, axis)
  return z, z


def _log_softmax_bwd(axis, z, g):
  return (g - jnp.exp(z) * jnp.sum(g, axis=axis, keepdims=True),)


_log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)
register(log_softmax, jax.nn.log_softmax, _sample_with_axis, note="004")
