"""Every registered rule passes the checks beyond the classic ones (the classic ones run in
tests/ops/test_registry.py). Cheap: these share one compiled backward per rule. The transform matrix
over the whole registry is slower (about 3 s a rule) and runs with HYPOTHESIS_PROFILE=thorough."""

import os

import jax
import numpy as np
import pytest

from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY

CHEAP = ("linearity", "cotangents", "determinism", "residuals")
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rule_passes_the_new_checks(name):
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(0), np.float32)
  checks = CHEAP + (("transforms",) if THOROUGH else ())
  report = check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs, checks=checks)
  assert report.passed
  assert {e.check for e in report.entries} >= {"linearity", "cotangents", "determinism"}
  assert any(n.startswith("residuals:") for n in report.notes)


@pytest.mark.skipif(not THOROUGH, reason="the whole registry in float64: HYPOTHESIS_PROFILE=thorough")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rule_passes_every_check_in_float64(name):
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(1), np.float64)
  with jax.enable_x64(True):
    assert check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs, checks="all").passed
