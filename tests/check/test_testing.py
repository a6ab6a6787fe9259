"""jaxbp.testing: assert_vjp, the hypothesis strategies, parametrize_rules; and the page's own example."""

import pathlib
import re

import hypothesis
import jax
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.testing import arrays
from jaxbp.testing import assert_vjp
from jaxbp.testing import kinked
from jaxbp.testing import parametrize_rules
from jaxbp.testing import shapes

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "custom-rule.md"


def test_assert_vjp_runs_the_cheap_checks_and_raises_with_the_report():
  x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  report = assert_vjp(ops.sigmoid, ops.reference.sigmoid, x)
  assert {"linearity", "cotangents", "determinism"} <= {e.check for e in report.entries}
  with pytest.raises(AssertionError, match=r"^check_vjp\(sigmoid vs tanh\): FAILED"):
    assert_vjp(ops.sigmoid, jax.numpy.tanh, x)


@hypothesis.given(shape=shapes(max_rank=2), data=hypothesis.strategies.data())
def test_strategies_draw_shapes_values_away_from_and_at_the_kink(shape, data):
  assert len(shape) <= 2 and all(1 <= d <= 5 for d in shape)
  away = data.draw(arrays(shape, away_from=0.0, gap=0.1))
  assert away.shape == shape and away.dtype == np.float32 and np.all(np.abs(away) >= 0.1)
  at = data.draw(kinked(shape, at=0.0))
  assert at.shape == shape and np.any(at == 0.0)


def test_parametrize_rules_refuses_a_bad_case():
  with pytest.raises(TypeError, match="case 0 must be"):
    parametrize_rules([(ops.sigmoid, ops.reference.sigmoid)])


def test_the_pages_example_makes_one_passing_test_per_rule_and_dtype():
  code = re.search(r"<!-- test: docs/custom-rule.md -->\s*```python\n(.*?)```", PAGE.read_text(), re.S)[1]
  assert len(code.strip().splitlines()) <= 30
  namespace: dict = {}
  exec(compile(code, str(PAGE), "exec"), namespace)  # pylint: disable=exec-used
  test = namespace["test_my_rules"]
  (mark,) = test.pytestmark
  params = mark.args[1]
  assert [p.id for p in params] == ["softplus-float32-0", "softplus-float64-0", "cube-float32-0",
                                    "cube-float64-0"]
  for p in params:
    test(*p.values)
