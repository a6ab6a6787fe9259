"""The whole registry through every check in float64 (the transform matrix included, about 3 s a rule):
HYPOTHESIS_PROFILE=thorough. The cheap new checks (linearity, cotangents, determinism, residuals) run on
every rule in the default profile, on the same call as the classic ones, in tests/ops/test_registry.py."""

import os

import jax
import numpy as np
import pytest

from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


@pytest.mark.skipif(not THOROUGH, reason="the whole registry in float64: HYPOTHESIS_PROFILE=thorough")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rule_passes_every_check_in_float64(name):
  rule = REGISTRY[name]
  args, kwargs = rule.sample(np.random.default_rng(1), np.float64)
  with jax.enable_x64(True):
    assert check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs, checks="all").passed
