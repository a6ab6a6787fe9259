"""``check_vjp`` and ``check_jvp`` on bfloat16 and float16 inputs: every comparison of the rule with its
reference (forward, vjp, jacobian, transpose; check_jvp's forward, jvp and vjp) is made against the
float64 truth, within the rule's bound (``jaxbp.check._truth``), not against the reference run in the
inputs' dtype. float32 keeps its per-dtype tolerances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_jvp
from jaxbp.check import check_vjp
from jaxbp.check.hard_cases import HARD_CASES

CE, REF = ops.softmax_cross_entropy, ops.reference.softmax_cross_entropy
COMPARED = ("forward", "vjp", "jacobian", "transpose")
F16_SCALE = float(jnp.finfo(np.float16).eps / jnp.finfo(jnp.bfloat16).eps)  # 1/8: a bound in float16's ulps


def _saturated(dtype=jnp.bfloat16):
  """Logits whose true class has softmax 0.999: each row's loss, 1e-3, is below one ulp of its log-sum-exp."""
  (z, y), _ = HARD_CASES["softmax_cross_entropy"]["true class p = 0.999"](np.random.default_rng(0))
  return jnp.asarray(z, dtype), y


def _plain(dtype):
  rng = np.random.default_rng(1)
  return jnp.asarray(rng.standard_normal((4, 8)), dtype), rng.integers(0, 8, 4).astype(np.int32)


def _with_forward(forward):
  """A rule with ``forward`` planted and softmax_cross_entropy's correct backward (reduction "none")."""
  @jax.custom_vjp
  def f(logits, labels):
    return forward(logits, labels)

  def bwd(res, g):
    logits, labels = res
    return jax.vjp(lambda z: CE(z, labels, "none"), logits)[1](g)[0], None
  f.defvjp(lambda logits, labels: (forward(logits, labels), (logits, labels)), bwd)
  return f


def _ref(logits, labels):
  return REF(logits, labels, "none")


def test_a_correct_rule_passes_where_the_bfloat16_reference_is_noise():
  z, y = _saturated()
  with jax.enable_x64(True):
    truth = np.asarray(_ref(jnp.asarray(z, jnp.float64), y))
  assert np.max(np.abs(np.asarray(_ref(z, y), np.float64) - truth)) > 0.5 * np.max(truth)  # the reference: noise
  report = check_vjp(CE, REF, z, y, "none", argnums=0, checks=COMPARED, self_test=False)
  bound = ops.bf16_bound("softmax_cross_entropy")
  assert sorted({e.check for e in report.entries}) == sorted(COMPARED)
  assert all((e.rtol, e.atol) == (bound, 0.0) and e.rel_err <= bound for e in report.entries), report


@pytest.mark.parametrize("forward, inputs", [
    (lambda z, y: 1.02 * CE(z, y, "none"), _plain),  # 2% off: within the bfloat16 tolerance rtol 5e-2
    (_ref, _saturated),  # computed in bfloat16, as the reference is: identical to it, 100% off the truth
], ids=["2% off", "rounded in bfloat16"])
def test_a_wrong_forward_in_bfloat16_fails_against_the_truth(forward, inputs):
  z, y = inputs(jnp.bfloat16)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(_with_forward(forward), _ref, z, y, checks=COMPARED, self_test=False)
  failures = excinfo.value.report.failures
  assert [(e.check, e.input) for e in failures] == [("forward", "output"), ("forward", "output (jax.vjp)")]
  bound = ops.DEFAULT_BF16_BOUND
  assert all(e.rtol == bound and e.rel_err > bound for e in failures)
  assert f"bound {bound:.1e} (a rule not in the registry)" in str(excinfo.value)


def test_float16_is_held_to_the_default_bound_in_its_own_ulps():
  z, y = _plain(np.float16)
  report = check_vjp(CE, REF, z, y, "none", argnums=0, checks=COMPARED, self_test=False)
  bound = ops.DEFAULT_BF16_BOUND * F16_SCALE  # two roundings: no rule's float16 bound is measured
  assert all(e.rtol == bound and e.rel_err <= bound for e in report.entries), report
  with pytest.raises(AssertionError, match="forward for output off"):  # 0.5%: within float16's rtol 1e-2
    check_vjp(_with_forward(lambda z, y: 1.005 * CE(z, y, "none")), _ref, z, y, checks=("forward",),
              self_test=False)


def test_nan_where_the_truth_is_nan_agrees():
  x = jnp.asarray([-1.0, 0.5, 2.0, 3.0], jnp.bfloat16)  # log(-1): NaN in the rule and in the float64 truth
  report = check_vjp(ops.log, ops.reference.log, x, checks=("forward", "vjp"), self_test=False)
  assert [e.check for e in report.entries] == ["forward", "forward", "vjp"]
  assert all(np.isfinite(e.rel_err) and e.dtype == "bfloat16" for e in report.entries), report


def test_a_truth_beyond_float16_is_its_infinity():
  x = jnp.asarray([1.0, 5.0, 12.0], np.float16)  # exp(12) = 1.6e5 > float16's largest, 65504
  report = check_vjp(ops.exp, ops.reference.exp, x, checks=("forward", "vjp"), self_test=False)
  assert all(np.isfinite(e.rel_err) for e in report.entries), report


def test_a_rule_that_draws_random_numbers_meets_its_own_mask():
  """jax.random draws another stream with x64 on: a float64 truth would drop other elements than the rule."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6)), jnp.bfloat16)
  report = check_vjp(ops.dropout, ops.reference.dropout, jax.random.key(0), x, 0.5, argnums=1, checks=COMPARED,
                     self_test=False)
  bound = ops.bf16_bound("dropout")
  assert len(report.entries) == 5 and all(e.rtol == bound and e.rel_err <= bound for e in report.entries), report


def test_float32_keeps_its_tolerances():
  z, y = _plain(np.float32)
  report = check_vjp(CE, REF, z, y, "none", argnums=0, checks=COMPARED, self_test=False)
  assert all((e.rtol, e.atol) == (1e-4, 1e-6) for e in report.entries), report


def _softplus(scale_out=1.0, scale_tangent=1.0):
  """softplus computed in float32 at least and rounded once to its input's dtype, with planted scales."""
  def wide(a):
    return a.astype(jnp.promote_types(a.dtype, jnp.float32))

  @jax.custom_jvp
  def f(x):
    return (scale_out * jax.nn.softplus(wide(x))).astype(x.dtype)

  @f.defjvp
  def _(primals, tangents):
    (x,), (t,) = primals, tangents
    return f(x), (scale_tangent * jax.nn.sigmoid(wide(x)) * wide(t)).astype(t.dtype)
  return f


X = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)) * 3, jnp.bfloat16)


def test_check_jvp_holds_bfloat16_to_the_truth():
  report = check_jvp(_softplus(), jax.nn.softplus, X)
  held = [e for e in report.entries if e.check in ("forward", "jvp", "vjp")]
  assert len(held) == 4 and all(e.rtol == ops.DEFAULT_BF16_BOUND and e.atol == 0 for e in held), report


@pytest.mark.parametrize("scales, caught", [
    ((1.02, 1.0), {"forward"}),      # 2%: within the bfloat16 tolerance rtol 5e-2
    ((1.0, 1.02), {"jvp", "vjp"}),
], ids=["primal 2% off", "tangent 2% off"])
def test_check_jvp_sees_two_percent_in_bfloat16(scales, caught):
  with pytest.raises(AssertionError) as excinfo:
    check_jvp(_softplus(*scales), jax.nn.softplus, X, checks=("forward", "jvp", "vjp"))
  assert {e.check for e in excinfo.value.report.failures} == caught


def test_attention_with_float32_alibi_slopes_keeps_the_dtype_of_q():
  """ALiBi slopes take no gradient: float32 slopes beside bfloat16 q, k, v left the output float32 while the
  reference's was bfloat16 (the vjp check then failed on a type error); now both are bfloat16 and the rule
  passes against the float64 truth."""
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 8, 4, 8)), jnp.bfloat16) for _ in range(3))
  slopes = jnp.asarray(2.0 ** -np.arange(1, 5), jnp.float32)
  rule = lambda q, k, v: ops.attention(q, k, v, causal=True, alibi_slopes=slopes)
  ref = lambda q, k, v: ops.reference.attention(q, k, v, causal=True, alibi_slopes=slopes)
  assert rule(q, k, v).dtype == ref(q, k, v).dtype == jnp.bfloat16
  report = check_vjp(rule, ref, q, k, v, checks=("forward", "vjp"), self_test=False)
  assert not report.failures, report
