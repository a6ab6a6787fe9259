"""Tests for ``jaxbp.check.check_vjp``: correct rules pass, planted bugs fail naming the input and the error.

Every planted bug is its own ``jax.custom_vjp`` defined here, next to the correct rule it breaks, so a
reader can see the one-line difference that each check must catch.
"""

import math
import re

import jax
from jax import lax
import jax.numpy as jnp
from jax.scipy.special import erf
from jax.test_util import check_grads
import numpy as np
import pytest

from jaxbp.check import CHECKS
from jaxbp.check import FD_TOLERANCE
from jaxbp.check import TOLERANCES
from jaxbp.check import check_vjp


def _draw(shape, dtype=np.float32, seed=0, low=-2.0, high=2.0):
  return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)


def _failures(excinfo):
  """The failed (check, input) pairs of the report attached to check_vjp's AssertionError."""
  return {(e.check, e.input) for e in excinfo.value.report.failures}


def _off_by(message, check, label):
  """The error ``check_vjp`` states in its first line for ``check`` of ``label``."""
  m = re.search(rf"{check} for {re.escape(label)} off by ([^ ]+) \(rel ([^)]+)\)", message.splitlines()[0])
  assert m, f"no '{check} for {label} off by' in:\n{message}"
  return float(m.group(1)), float(m.group(2))


# --- sigmoid: y = 1/(1 + e^-x), dx = g·y·(1 − y) -------------------------------------------------------

def sigmoid_ref(x):
  return 1 / (1 + jnp.exp(-x))


def _sigmoid_fwd(x):
  y = sigmoid_ref(x)
  return y, y


@jax.custom_vjp
def sigmoid(x):
  return sigmoid_ref(x)


sigmoid.defvjp(_sigmoid_fwd, lambda y, g: (g * y * (1 - y),))


@jax.custom_vjp
def sigmoid_forgets_one_minus_y(x):
  return sigmoid_ref(x)


sigmoid_forgets_one_minus_y.defvjp(_sigmoid_fwd, lambda y, g: (g * y,))  # planted: no (1 − y)


@jax.custom_vjp
def sigmoid_stop_gradient(x):
  return sigmoid_ref(x)


def _sigmoid_stop_gradient_bwd(y, g):
  y = lax.stop_gradient(y)  # planted: right values, but the backward is opaque to a second derivative
  return (g * y * (1 - y),)


sigmoid_stop_gradient.defvjp(_sigmoid_fwd, _sigmoid_stop_gradient_bwd)


@jax.custom_vjp
def sigmoid_overflows(x):
  return sigmoid_ref(x)


def _sigmoid_overflows_bwd(x, g):
  e = jnp.exp(-x)  # planted: e^100 overflows float32 to inf, and inf/inf is NaN; fine in float64
  return (g * e / (1 + e) ** 2,)


sigmoid_overflows.defvjp(lambda x: (sigmoid_ref(x), x), _sigmoid_overflows_bwd)


@jax.custom_vjp
def sigmoid_eager_only(x):
  return sigmoid_ref(x)


def _sigmoid_eager_only_bwd(y, g):
  y = jnp.asarray(np.asarray(y))  # planted: a host round trip, which needs concrete values (no jit)
  return (g * y * (1 - y),)


sigmoid_eager_only.defvjp(_sigmoid_fwd, _sigmoid_eager_only_bwd)


# --- matmul: z = x·w, dx = g·wᵀ, dw = xᵀ·g ----------------------------------------------------------------

def matmul_ref(x, w):
  return x @ w


@jax.custom_vjp
def matmul(x, w):
  return x @ w


matmul.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, g: (g @ res[1].T, res[0].T @ g))


@jax.custom_vjp
def matmul_forgets_transpose(x, w):
  return x @ w


# planted: g·w instead of g·wᵀ; with a square w the shapes still fit and only the numbers are wrong
matmul_forgets_transpose.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, g: (g @ res[1], res[0].T @ g))


# --- broadcast add: z = x + y, y broadcast over the rows of x; dy sums g over the broadcast axis ------------

def add_ref(x, y):
  return x + y


@jax.custom_vjp
def add_unsummed(x, y):
  return x + y


add_unsummed.defvjp(lambda x, y: (x + y, None), lambda _, g: (g, g))  # planted: dy = g, shape [N, D]


@jax.custom_vjp
def add_mean(x, y):
  return x + y


add_mean.defvjp(lambda x, y: (x + y, None), lambda _, g: (g, jnp.mean(g, axis=0)))  # planted: mean, not sum


# --- the checks pass correct rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_correct_rule_passes_with_per_input_errors(dtype):
  x, w = _draw((3, 4), dtype, seed=1), _draw((4, 5), dtype, seed=2)
  report = check_vjp(matmul, matmul_ref, x, w, second_order=True)
  assert report.passed and not report.skipped
  labels = ["input 'x' (args[0])", "input 'w' (args[1])"]
  exact = ("cotangents", "determinism")  # tolerance 0: a cotangent's type, the bits of two runs
  assert [(e.check, e.input) for e in report.entries] == (
      [("forward", "output"), ("forward", "output (jax.vjp)")]
      + [(c, l) for c in CHECKS[1:] + ("linearity",) + exact for l in labels])
  rtol, atol = TOLERANCES[np.dtype(dtype)]
  for e in report.entries:
    if e.check == "finite_differences":  # atol: FD_TOLERANCE's plus the differences' rounding error
      assert e.rtol == FD_TOLERANCE[0] and FD_TOLERANCE[1] < e.atol < 1e-8, e
    elif e.check in exact:
      assert (e.rtol, e.atol, e.abs_err) == (0.0, 0.0, 0.0), e
      continue
    else:
      assert (e.rtol, e.atol) == (rtol, atol), e
    assert e.dtype == ("float64" if e.check == "finite_differences" else np.dtype(dtype).name), e
    assert 0 <= e.abs_err <= e.atol + e.rtol * 100 and e.rel_err <= e.rtol, e
  text = str(report)
  assert text.startswith("check_vjp(matmul vs matmul_ref): all 22 checks passed")
  assert all(label in text for label in labels) and "rel err" in text


def test_x64_state_is_restored():
  for caller in (False, True):
    with jax.enable_x64(caller):
      report = check_vjp(sigmoid, sigmoid_ref, _draw((5,), np.float64))  # float64 even with x64 off
      assert jax.config.jax_enable_x64 == caller
      assert {e.dtype for e in report.entries} == {"float64"}
      report = check_vjp(sigmoid, sigmoid_ref, _draw((5,)))
      assert jax.config.jax_enable_x64 == caller
      assert {e.dtype for e in report.entries} == {"float32", "float64"}  # float64: finite differences


# --- the planted bugs, each named by input and size -------------------------------------------------------

def test_sigmoid_without_one_minus_y_fails_naming_x():
  x = _draw((3, 4))
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(sigmoid_forgets_one_minus_y, sigmoid_ref, x)
  message = str(excinfo.value)
  assert "FAILED" in message
  for check in ("vjp", "finite_differences", "jacobian"):
    abs_err, rel_err = _off_by(message, check, "input 'x' (args[0])")
    assert abs_err > 0.05 and rel_err > 0.05, (check, abs_err, rel_err)
  # dx = g·y instead of g·y·(1 − y): at the worst element, got/expected is exactly 1/(1 − y).
  m = re.search(r"vjp .*\n.*largest error at index \((\d+), (\d+)\): got ([^,]+), expected (\S+)", message)
  assert m, message
  i, j, got, expected = int(m[1]), int(m[2]), float(m[3]), float(m[4])
  y = float(sigmoid_ref(x)[i, j])
  np.testing.assert_allclose(got / expected, 1 / (1 - y), rtol=1e-4)


def test_matmul_without_transpose_fails_naming_x_only():
  x, w = _draw((3, 4), seed=1), _draw((4, 4), seed=2)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(matmul_forgets_transpose, matmul_ref, x, w)
  failed = _failures(excinfo)
  assert {label for _, label in failed} == {"input 'x' (args[0])"}  # dw is right and is not blamed
  assert {"vjp", "finite_differences", "jacobian", "transpose"} <= {check for check, _ in failed}
  abs_err, rel_err = _off_by(str(excinfo.value), "vjp", "input 'x' (args[0])")
  assert abs_err > 0.1 and rel_err > 0.1


def test_broadcast_add_without_sum_fails_naming_y():
  x, y = _draw((3, 4), seed=1), _draw((4,), seed=2)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(add_unsummed, add_ref, x, y)
  message = str(excinfo.value)
  first = message.splitlines()[0]
  assert "for input 'y' (args[1]) raised ValueError" in first and "shapes do not match" in first
  assert {label for _, label in _failures(excinfo)} == {"input 'y' (args[1])"}
  assert isinstance(excinfo.value.__cause__, ValueError)

  def model(x, bias):  # not a custom_vjp itself: the input is found by the shape JAX's message names
    return 2 * add_unsummed(x, bias)
  with pytest.raises(AssertionError, match=r"vjp, .* for input 'bias' \(args\[1\]\) raised ValueError"):
    check_vjp(model, lambda x, bias: 2 * (x + bias), x, y, checks=("vjp", "jit"))


def test_broadcast_add_with_mean_fails_by_two_thirds():
  x, y = _draw((3, 4), seed=1), _draw((4,), seed=2)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(add_mean, add_ref, x, y)
  assert {label for _, label in _failures(excinfo)} == {"input 'y' (args[1])"}
  # mean over 3 rows is the sum / 3: off by 2/3 of the true gradient, element for element.
  _, rel_err = _off_by(str(excinfo.value), "vjp", "input 'y' (args[1])")
  np.testing.assert_allclose(rel_err, 2 / 3, rtol=1e-2)


def test_non_differentiable_backward_fails_only_second_order():
  x = _draw((3, 4))
  check_vjp(sigmoid_stop_gradient, sigmoid_ref, x)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(sigmoid_stop_gradient, sigmoid_ref, x, second_order=True)
  assert _failures(excinfo) == {("second_order", "input 'x' (args[0])")}


def test_rule_right_only_in_float64_fails_float32_but_not_finite_differences():
  x = np.concatenate([_draw((6,), np.float64), [-100.0, 100.0]])
  # jax.nn.sigmoid as the reference: autodiff of 1/(1 + e^-x) is itself NaN at -100 in float32.
  check_vjp(sigmoid_overflows, jax.nn.sigmoid, x)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(sigmoid_overflows, jax.nn.sigmoid, x.astype(np.float32))
  checks = {check for check, _ in _failures(excinfo)}
  assert "vjp" in checks and "finite_differences" not in checks  # FD runs the rule itself in float64
  assert "off by inf" in str(excinfo.value).splitlines()[0]
  assert "got nan" in str(excinfo.value)


def test_rule_right_only_away_from_jit_fails_jit_vmap_and_second_order():
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(sigmoid_eager_only, sigmoid_ref, _draw((3, 4)), second_order=True)
  # every compiled check fails (linearity and determinism run the compiled backward, cotangents traces it)
  assert {check for check, _ in _failures(excinfo)} == {"jit", "vmap", "second_order", "linearity",
                                                        "determinism", "cotangents"}
  assert "TracerArrayConversionError" in str(excinfo.value).splitlines()[0]


# --- bugs that jax.test_util.check_grads lets through ------------------------------------------------------

def gelu_ref(x):
  return 0.5 * x * (1 + erf(x / math.sqrt(2)))


@jax.custom_vjp
def gelu_tanh_backward(x):
  return gelu_ref(x)


def _gelu_tanh_backward_bwd(x, g):
  # planted: the forward is the exact erf GELU, the backward the derivative of its tanh approximation
  c = math.sqrt(2 / math.pi)  # Python floats: the cotangent keeps x's dtype even with x64 on
  t = jnp.tanh(c * (x + 0.044715 * x ** 3))
  return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)),)


gelu_tanh_backward.defvjp(lambda x: (gelu_ref(x), x), _gelu_tanh_backward_bwd)


def test_gelu_with_approximate_backward_passes_check_grads_but_not_check_vjp():
  x = _draw((64,), low=-3.0, high=3.0)
  check_grads(gelu_tanh_backward, (x,), order=1, modes=["rev"])  # float32 differences, tolerance 2e-3
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(gelu_tanh_backward, gelu_ref, x)
  checks = {check for check, _ in _failures(excinfo)}
  assert {"vjp", "finite_differences"} <= checks
  abs_err, _ = _off_by(str(excinfo.value), "finite_differences", "input 'x' (args[0])")
  assert 1e-4 < abs_err < 1e-2  # about 1e-3: invisible in float32 differences, plain in float64


@jax.custom_batching.custom_vmap
def _softmax_bwd_kernel(y, g):
  """dx = y ⊙ (g − Σ_c g_c·y_c), over the last axis: a stand-in for a fused kernel."""
  return y * (g - jnp.sum(g * y, axis=-1, keepdims=True))


@_softmax_bwd_kernel.def_vmap
def _softmax_bwd_kernel_vmap(axis_size, in_batched, y, g):
  y, g = (a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip((y, g), in_batched))
  # planted: the batching rule assumes [batch, classes] and reduces axis 1, wrong for [batch, N, classes]
  return y * (g - jnp.sum(g * y, axis=1, keepdims=True)), True


def softmax_ref(x):
  return jax.nn.softmax(x, axis=-1)


@jax.custom_vjp
def softmax_bad_batching(x):
  return softmax_ref(x)


softmax_bad_batching.defvjp(lambda x: (softmax_ref(x), softmax_ref(x)),
                            lambda y, g: (_softmax_bwd_kernel(y, g),))


def test_bug_visible_only_under_vmap_passes_check_grads_but_not_check_vjp():
  x = _draw((4, 4))  # square, so the wrong reduction still has the right shape
  check_grads(softmax_bad_batching, (x,), order=1, modes=["rev"])
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(softmax_bad_batching, softmax_ref, x)
  assert _failures(excinfo) == {("vmap", "input 'x' (args[0])")}
  _, rel_err = _off_by(str(excinfo.value), "vmap", "input 'x' (args[0])")
  assert rel_err > 0.1


# --- pytree outputs, argnums, large inputs, options (pytree inputs: test_check_pytrees.py) ----------------

@jax.custom_vjp
def sigmoid_and_derivative(x):
  y = sigmoid_ref(x)
  return {"y": y, "dy": y * (1 - y)}


def _sigmoid_and_derivative_bwd(y, g):
  d = y * (1 - y)
  return (g["y"] * d + g["dy"] * d * (1 - 2 * y),)


sigmoid_and_derivative.defvjp(lambda x: (sigmoid_and_derivative(x), sigmoid_ref(x)),
                              _sigmoid_and_derivative_bwd)


def test_pytree_output_and_argnums():
  report = check_vjp(sigmoid_and_derivative, lambda x: {"y": sigmoid_ref(x), "dy": sigmoid_ref(x)
                                                        * (1 - sigmoid_ref(x))}, _draw((6,)))
  assert {e.input for e in report.entries if e.check == "forward"} == {
      "output['dy']", "output['y']", "output['dy'] (jax.vjp)", "output['y'] (jax.vjp)"}
  # argnums: w is passed through, so a rule that gets dw wrong but dx right passes.
  x, w = _draw((3, 4), seed=1), _draw((4, 4), seed=2)
  report = check_vjp(matmul_forgets_transpose, matmul_ref, x, w, argnums=1)
  assert {e.input for e in report.entries} == {"output", "output (jax.vjp)", "input 'w' (args[1])"}


def test_large_input_skips_jacobian_and_says_so():
  report = check_vjp(sigmoid, sigmoid_ref, _draw((40, 50)), jacobian_max_size=1000)
  assert report.skipped == (("jacobian", "input 'x' (args[0])",
                             "the Jacobian has 4,000,000 entries > jacobian_max_size=1,000"),)
  assert "skipped jacobian for input 'x' (args[0])" in str(report)
  assert "finite_differences" in {e.check for e in report.entries}


def test_checks_subset_and_bad_calls():
  report = check_vjp(sigmoid, sigmoid_ref, _draw((3,)), checks=("vjp", "jit"))
  assert [e.check for e in report.entries] == ["vjp", "jit"]
  with pytest.raises(ValueError, match="unknown checks"):
    check_vjp(sigmoid, sigmoid_ref, _draw((3,)), checks=("vjp", "hessian"))
  with pytest.raises(ValueError, match="no differentiable inputs"):
    check_vjp(lambda i: i * 2, lambda i: i * 2, np.arange(3))


def test_user_tolerance_override():
  x = _draw((64,), low=-3.0, high=3.0)
  # 5e-2: each element is held to its own size, and the approximate backward is 1.2% off at x = -2.7
  report = check_vjp(gelu_tanh_backward, gelu_ref, x, rtol=5e-2, fd_rtol=5e-2)
  assert {e.rtol for e in report.entries if e.check not in ("cotangents", "determinism")} == {5e-2}
  with pytest.raises(AssertionError, match="vjp for input 'x'"):
    check_vjp(gelu_tanh_backward, gelu_ref, x, rtol=1e-2, fd_rtol=1e-2)
