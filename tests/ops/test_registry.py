"""Every registered rule passes check_vjp: on random draws in float32 and float64, and on every branch.

The rules are taken from ``REGISTRY``: a rule added later is checked here without a line of test. Each
rule names its code paths (``Rule.branches``: each reduction, label kind, rank ≥ 3, a batch of one,
each broadcast form, zero-size axes), and every branch is proven in float64 even in the CI profile,
where a single random draw per rule would reach only one of them.
"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

import jaxbp
from jaxbp.check import CHECKS
from jaxbp.check import DEFAULT_CHECKS
from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY

RULES = sorted(REGISTRY)
BRANCHES = [(name, branch) for name in RULES for branch in REGISTRY[name].branches]
# On every branch, each check that compares the gradient itself; vmap, the explicit Jacobian and second
# order (what a transform does to a correct rule, not which path it takes) run on the random draws, which
# are drawn from the same branches. Fixed shapes per branch share the compiled primitives between rules.
BRANCH_CHECKS = ("forward", "vjp", "finite_differences", "transpose", "jit")
# check_vjp's default (the classic checks, linearity, cotangents, determinism, residuals) and second order;
# the transform matrix (about 3 s a rule) runs over the registry in tests/check with
# HYPOTHESIS_PROFILE=thorough.
DRAW_CHECKS = DEFAULT_CHECKS + ("second_order",)

EXPECTED = {
    "add", "multiply", "maximum", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax",
    "log_softmax", "matmul", "linear", "squared_error", "mse", "softmax_cross_entropy",
    "multiclass_hinge", "l2_penalty", "batch_norm", "layer_norm", "dropout",
}


def test_registry_holds_every_rule_of_the_issue():
  assert EXPECTED <= set(REGISTRY)
  for name, rule in REGISTRY.items():
    assert getattr(jaxbp.ops, name) is rule.fn
    assert getattr(jaxbp.ops.reference, name) is rule.reference
    doc = rule.fn.__doc__
    assert "VJP" in doc and "Note" in doc, f"{name}: the docstring must state its VJP and its note"


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("dtype", [np.float32])
@hypothesis.given(seed=st.integers(0, 2**32 - 1))
def test_rule_passes_every_check(name, dtype, seed):
  """A random draw (any branch) in float32, check_vjp's default checks and second order; float64 is
  proven branch by branch below."""
  rule = REGISTRY[name]
  args, kwargs = _nonempty_draw(rule, seed, dtype)
  with jax.enable_x64(dtype == np.float64):
    report = _passes(rule, args, kwargs, seed, checks=DRAW_CHECKS)
  assert any(n.startswith("residuals:") for n in report.notes)


def _nonempty_draw(rule, seed, dtype):
  """The first draw from ``seed`` with no empty array: an empty input passes every check trivially (at
  seed 0, 28 of the 40 rules drew one), and the zero-size branches are proven below."""
  rng = np.random.default_rng(seed)
  for _ in range(200):
    args, kwargs = rule.sample(rng, dtype)
    if all(np.size(a) for a in jax.tree.leaves(args) if hasattr(a, "shape")):
      return args, kwargs
  raise AssertionError(f"{rule.fn.__name__}: 200 draws, each with an empty array")


def _passes(rule, args, kwargs, seed, checks=CHECKS):
  report = check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs, checks=checks, seed=seed)
  assert report.passed
  checked = {entry.check for entry in report.entries} | {check for check, _, _ in report.skipped}
  assert set(checks) - {"residuals"} <= checked  # residuals is a note, not an entry
  return report


@pytest.mark.parametrize("name", RULES)
def test_every_rule_names_its_branches(name):
  assert len(REGISTRY[name].branches) >= 2, f"{name}: register it with branches=..., one per code path"


@pytest.mark.parametrize("name, branch", BRANCHES)
@hypothesis.given(seed=st.integers(0, 2**32 - 1))
def test_rule_passes_every_check_on_every_branch(name, branch, seed):
  rule = REGISTRY[name]
  args, kwargs = rule.branches[branch](np.random.default_rng(seed), np.float64)
  with jax.enable_x64(True):
    _passes(rule, args, kwargs, seed, checks=BRANCH_CHECKS)


@pytest.mark.parametrize("name", RULES)
def test_rule_keeps_the_input_dtype(name):
  """float32 in, float32 out, and float32 cotangents: no silent promotion to float64."""
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(0), np.float32)
  with jax.enable_x64(True):
    out = rule.fn(*args, **kwargs)
    chex.assert_trees_all_equal_dtypes(out, rule.reference(*args, **kwargs))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(out)), name
