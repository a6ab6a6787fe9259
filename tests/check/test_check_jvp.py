"""check_jvp: a correct custom_jvp passes every check; planted bugs fail the checks that should see them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.check import JVP_CHECKS
from jaxbp.check import check_jvp

X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


def _softplus(tangent_rule):
  @jax.custom_jvp
  def f(x):
    return jnp.logaddexp(x, 0.0)

  @f.defjvp
  def _(primals, tangents):
    (x,), (t,) = primals, tangents
    return f(x), tangent_rule(x, t)
  return f


def test_correct_custom_jvp_passes_every_check():
  report = check_jvp(_softplus(lambda x, t: jax.nn.sigmoid(x) * t), jax.nn.softplus, X)
  assert [e.check for e in report.entries] == ["forward"] + list(JVP_CHECKS)  # forward: a call, jax.jvp
  assert str(report).startswith("check_jvp(f vs softplus): all 8 checks passed")


@pytest.mark.parametrize("rule, caught", [
    (lambda x, t: jax.nn.sigmoid(x) * t * (1 - jax.nn.sigmoid(x)), {"jvp", "finite_differences", "vjp"}),
    (lambda x, t: jax.nn.sigmoid(x) * t + 3e-8, {"linearity"}),  # a constant below every tolerance
])
def test_planted_jvp_bugs_fail(rule, caught):
  with pytest.raises(AssertionError) as excinfo:
    check_jvp(_softplus(rule), jax.nn.softplus, X, checks=("jvp", "finite_differences", "linearity", "vjp"))
  assert {e.check for e in excinfo.value.report.failures} == caught
