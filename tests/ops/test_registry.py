"""Every registered rule, in float32 and float64, on random shapes and values, passes check_vjp.

The rules are taken from ``REGISTRY``: a rule added later is checked here without a line of test.
"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

import jaxbp
from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY

RULES = sorted(REGISTRY)

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
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@hypothesis.given(seed=st.integers(0, 2**32 - 1))
def test_rule_passes_every_check(name, dtype, seed):
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(seed), dtype)
  with jax.enable_x64(dtype == np.float64):
    report = check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs,
                       second_order=True, seed=seed)
  assert report.passed
  checked = {entry.check for entry in report.entries}
  assert {"vjp", "finite_differences", "transpose", "jit", "vmap"} <= checked


@pytest.mark.parametrize("name", RULES)
def test_rule_keeps_the_input_dtype(name):
  """float32 in, float32 out, and float32 cotangents: no silent promotion to float64."""
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(0), np.float32)
  with jax.enable_x64(True):
    out = rule.fn(*args, **kwargs)
    chex.assert_trees_all_equal_dtypes(out, rule.reference(*args, **kwargs))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(out)), name
