"""The checks beyond the classic ones (issue 13): linearity, cotangents, determinism, residuals, the
transform matrix, sharding and the self-test, each failing a planted bug the classic checks miss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import CHECKS
from jaxbp.check import check_vjp

X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
SIG = jax.nn.sigmoid


def _rule(bwd, save=lambda x: SIG(x)):
  """A sigmoid whose backward is ``bwd(saved, g)``."""
  @jax.custom_vjp
  def f(x):
    return SIG(x)
  f.defvjp(lambda x: (SIG(x), save(x)), lambda y, g: (bwd(y, g),))
  return f


def _failed(excinfo):
  return {e.check for e in excinfo.value.report.failures}


def test_constant_term_passes_vjp_but_fails_linearity():
  bwd = lambda y, g: g * y * (1 - y) + 3e-8  # planted: a constant below vjp's tolerance
  check_vjp(_rule(bwd), SIG, X, checks=CHECKS[:-1], self_test=False)  # the classic checks pass it
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(_rule(bwd), SIG, X)
  assert _failed(excinfo) == {"linearity"}


def test_sign_of_g_fails_linearity():
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(_rule(lambda y, g: jnp.sign(g) * y * (1 - y)), SIG, X, checks=("linearity",), self_test=False)
  assert _failed(excinfo) == {"linearity"}


@jax.custom_vjp
def take(x, idx):
  return x[idx]


take.defvjp(lambda x, idx: (x[idx], (x, idx)),  # planted: a float cotangent for the integer idx
            lambda res, g: (jnp.zeros_like(res[0]).at[res[1]].add(g), jnp.zeros(res[1].shape, jnp.float32)))


def test_float_cotangent_for_an_integer_input_is_named():
  idx = np.array([0, 2], np.int32)
  report = check_vjp(take, lambda x, i: x[i], X, idx, checks=("vjp",))  # JAX drops it: vjp passes
  assert report.passed
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(take, lambda x, i: x[i], X, idx, checks=("cotangents",))
  (bad,) = excinfo.value.report.failures
  assert bad.input == "input 'idx' (args[1])" and "float32[2] for an input of dtype int32" in bad.detail
  key = jax.random.key(0, impl="rbg")
  report = check_vjp(lambda k, x: x * 2, lambda k, x: x * 2, key, X, checks=("cotangents",))
  assert {e.input for e in report.entries} == {"input 'k' (args[0])", "input 'x' (args[1])"}


def _noisy(scale):
  """A backward whose result moves by ``scale``·k (relative) on its k-th run: run-time nondeterminism
  that no two runs share, below every tolerance (a counter, not a random draw: every run of the test
  sees the same)."""
  runs = iter(range(1, 1 << 30))

  def bwd(y, g):
    k = jax.pure_callback(lambda: np.asarray(next(runs), y.dtype), jax.ShapeDtypeStruct((), y.dtype))
    return g * y * (1 - y) * (1 + scale * k)  # planted: host state read at run time
  return bwd


def test_nondeterministic_backward_fails_determinism_only():
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(_rule(_noisy(2.0 ** -22)), SIG, X, checks=("vjp", "jit", "determinism"), self_test=False)
  assert _failed(excinfo) == {"determinism"}
  check_vjp(_rule(_noisy(2.0 ** -22)), SIG, X, checks=("determinism",), nondet_tol=1e-4, self_test=False)


def test_default_check_fails_a_clipped_cotangent_and_run_time_nondeterminism():
  """Issue 19: both passed the classic checks and were caught only with checks="all"."""
  x64 = X.astype(np.float64)
  noisy = _rule(_noisy(1e-10))
  check_vjp(noisy, SIG, x64, checks=CHECKS[:-1], self_test=False)  # the classic checks pass it
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(noisy, SIG, x64)
  assert _failed(excinfo) == {"determinism"}
  clipped = _rule(lambda y, g: jnp.clip(g, -2.5, 2.5) * y * (1 - y))  # planted: nonlinear in g
  check_vjp(clipped, SIG, X, checks=CHECKS[:-1], self_test=False)  # |u| < 2.5 at this seed
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(clipped, SIG, X)
  assert _failed(excinfo) == {"linearity"}


def test_residual_audit_counts_the_bytes_each_side_saves():
  sig = _rule(lambda y, g: g * y * (1 - y))
  report = check_vjp(sig, SIG, X, checks=("residuals",), self_test=False)
  (note,) = report.notes
  assert note.startswith(f"residuals: the rule's forward saves {X.nbytes:,} bytes in 1 arrays")
  assert "autodiff of the reference saves" in note


def test_transform_matrix_passes_a_correct_rule_and_reports_forward_mode_unsupported():
  w = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
  report = check_vjp(ops.matmul, ops.reference.matmul, X, w, checks=("transforms",), self_test=False)
  checks = {e.check for e in report.entries}
  assert checks == {"vmap_each", "vmap_batch1", "vmap_last_axis", "checkpoint", "scan", "rev_over_rev",
                    "fwd_over_rev"}
  assert len(report.entries) == 7 * 2
  assert ("jvp", "the rule", "forward mode over a custom_vjp is unsupported by JAX") in report.skipped


def test_backward_broken_at_second_order_fails_rev_over_rev():
  sig = _rule(lambda y, g: g * jax.lax.stop_gradient(y * (1 - y)))
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(sig, SIG, X, checks=("vjp", "transforms"), self_test=False)
  assert {"rev_over_rev", "fwd_over_rev"} <= _failed(excinfo) and "vjp" not in _failed(excinfo)


def test_sharded_over_eight_host_devices():
  x = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
  w = np.random.default_rng(3).normal(size=(3, 2)).astype(np.float32)
  report = check_vjp(ops.matmul, ops.reference.matmul, x, w, checks=("sharded",), self_test=False)
  assert [(e.check, e.passed) for e in report.entries] == [("sharded", True)] * 2
  report = check_vjp(_rule(lambda y, g: g), SIG, x, checks=("sharded",), self_test=False)
  assert report.skipped[0][0] == "sharded" and "importable" in report.skipped[0][2]


def test_self_test_reports_power_and_fails_a_check_without_any():
  report = check_vjp(ops.sigmoid, ops.reference.sigmoid, X)
  residuals, power = report.notes  # the default report has its residual line
  assert residuals.startswith("residuals: the rule's forward saves")
  assert power.startswith("power for input 'x' (args[0]): smallest error in one element caught: vjp 1e-03")
  with pytest.raises(AssertionError) as excinfo:  # a step of 1e-17 is below float64's resolution at 1
    check_vjp(ops.sigmoid, ops.reference.sigmoid, X, fd_eps=1e-17)
  (bad,) = excinfo.value.report.failures
  assert bad.check == "self_test" and bad.detail.startswith("finite_differences has no power here")
