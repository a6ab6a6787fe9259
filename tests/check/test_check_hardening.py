"""check_vjp's hardening (issue 9 §4): bounded memory, exact cotangent types, per-element errors,
``directions`` of at least 1, and NaN agreement in every check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_vjp


def test_large_jacobian_is_skipped_for_memory_with_the_reason():
  logits = np.random.default_rng(0).normal(size=(64, 1000)).astype(np.float32)
  labels = np.arange(64, dtype=np.int32) % 1000
  report = check_vjp(ops.softmax_cross_entropy, ops.reference.softmax_cross_entropy, logits, labels,
                     self_test=False)
  assert report.passed
  (check, label, why), = report.skipped
  assert (check, label) == ("jacobian", "input 'logits' (args[0])")
  assert "64,000 tangents" in why and "> the memory bound" in why
  assert "jacobian" not in {e.check for e in report.entries}


@jax.custom_vjp
def double_promotes(x):
  return 2 * x


double_promotes.defvjp(lambda x: (2 * x, None), lambda _, g: ((2 * g).astype(jnp.float32),))


def test_cotangent_of_another_dtype_fails_even_where_jax_casts():
  x = np.ones(3, np.float16)
  assert jax.grad(lambda a: double_promotes(a).sum())(x).dtype == np.float32  # JAX lets it through
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(double_promotes, lambda a: 2 * a, x)
  vjp = [e for e in excinfo.value.report.failures if e.check == "vjp"]
  assert vjp and vjp[0].detail == "dtype float32, expected float16 (the primal's dtype)"


@jax.custom_vjp
def scale_by_w(x, w):
  return jnp.sum(x * w)  # a scalar: dx = g·w, so dx[7] is a hundredth of the largest element, whatever g


def _one_percent_off_bwd(res, g):
  x, w = res
  dx = g * w
  return dx.at[7].multiply(1.01), g * x  # planted: 1% off at one element whose gradient is small


scale_by_w.defvjp(lambda x, w: (jnp.sum(x * w), (x, w)), _one_percent_off_bwd)


def test_one_percent_error_in_one_small_element_of_4096_fails():
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=4096).astype(np.float32), rng.uniform(1, 2, size=4096).astype(np.float32)
  w[7] = 0.01
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(scale_by_w, lambda a, b: jnp.sum(a * b), x, w, checks=("vjp",), self_test=False)
  (failure,), = [excinfo.value.report.failures]
  assert failure.input == "input 'x' (args[0])" and "index (7,)" in failure.detail
  assert failure.rel_err < 1e-4  # relative to the largest element, the error is below rtol


def test_directions_below_one_are_refused():
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match="'directions' must be an integer of at least 1"):
      check_vjp(ops.sigmoid, ops.reference.sigmoid, np.ones(3, np.float32), directions=bad)


@pytest.mark.parametrize("name", ["sigmoid", "log_softmax"])
def test_nan_where_the_reference_is_nan_agrees_in_every_check(name):
  x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  x[1, 2] = np.nan
  report = check_vjp(getattr(ops, name), getattr(ops.reference, name), x)
  assert {e.check for e in report.entries} >= {"finite_differences", "transpose", "jacobian", "vjp"}
  with pytest.raises(AssertionError, match="vjp for input 'x'"):  # a NaN the reference has not
    check_vjp(getattr(ops, name), lambda a: getattr(ops.reference, name)(jnp.nan_to_num(a)), x,
              checks=("vjp",))
