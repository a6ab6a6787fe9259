"""The bfloat16 precision contract: every rule of the registry within its bound and no worse than autodiff.

The rules are taken from ``REGISTRY``: a rule added later is held to the contract (to
``DEFAULT_BF16_BOUND`` until its own bound is written in ``jaxbp/ops/_precision.py``) without a line of
test. One draw of each rule's sampler and each of its hard cases, three compiled VJPs per draw (the
rule and autodiff in bfloat16, the truth in float64) in one program; ``benchmarks/precision.py`` runs
every branch at more seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_vjp
from jaxbp.check.hard_cases import HARD_CASES
from jaxbp.check.precision import gradient_errors
from jaxbp.check.precision import measure_rule
from jaxbp.check.precision import within_contract
from jaxbp.ops import REGISTRY


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rule_keeps_its_bfloat16_contract(name):
  broken = [f"{m.case} / {e.input}: {why}" for m in measure_rule(name, seeds=(0,), branches=False)
            for e in m.errors if (why := within_contract(name, e))]
  assert not broken, f"{name}: " + "; ".join(broken)


def test_every_hard_case_names_a_registered_rule():
  assert set(HARD_CASES) <= set(REGISTRY)


def test_unlisted_rule_takes_the_default_bound():
  assert ops.bf16_bound("a rule not written yet") == ops.DEFAULT_BF16_BOUND
  assert all(0 < b <= 4 * ops.DEFAULT_BF16_BOUND for b in ops.BF16_BOUNDS.values())
  assert set(ops.BF16_BOUNDS) <= set(REGISTRY)


def _ce_in_bfloat16(logits, labels):
  """Cross-entropy whose backward works in its inputs' bfloat16 (Liger-Kernel's issue 1329): softmax − onehot
  of a true class at p = 0.999 rounds to 1 − 1 = 0."""
  @jax.custom_vjp
  def ce(z):
    return ops.reference.softmax_cross_entropy(z, labels)

  def fwd(z):
    return ce(z), jax.nn.softmax(z)  # softmax kept in bfloat16

  def bwd(p, g):
    return (g * (p - jax.nn.one_hot(labels, p.shape[-1], dtype=p.dtype)) / p.shape[0],)
  ce.defvjp(fwd, bwd)
  return ce(logits)


@functools.cache
def _saturated():
  return HARD_CASES["softmax_cross_entropy"]["true class p = 0.999"](np.random.default_rng(0))[0]


def test_contract_sees_a_backward_in_bfloat16():
  z, y = _saturated()
  bad, = gradient_errors(_ce_in_bfloat16, ops.reference.softmax_cross_entropy, (z, y))
  good, = gradient_errors(ops.softmax_cross_entropy, ops.reference.softmax_cross_entropy, (z, y))
  assert bad.rule_max > 0.5 and bad.autodiff_max > 0.5   # the true class's gradient is lost
  assert good.rule_max < 2 ** -8                        # one rounding of a float32 result
  assert within_contract("softmax_cross_entropy", good) == ""
  assert "bound" in within_contract("softmax_cross_entropy", bad)


def test_check_vjp_holds_bfloat16_to_the_float64_truth():
  z, y = _saturated()
  z = jnp.asarray(z, jnp.bfloat16)
  report = check_vjp(ops.softmax_cross_entropy, ops.reference.softmax_cross_entropy, z, y, checks=("vjp",),
                     self_test=False)
  entry, = report.entries
  assert entry.rtol == ops.bf16_bound("softmax_cross_entropy") and entry.rel_err < 2 ** -8
  with pytest.raises(AssertionError, match="vjp for input 'logits'"):
    check_vjp(_ce_in_bfloat16, ops.reference.softmax_cross_entropy, z, y, checks=("vjp",), self_test=False)
