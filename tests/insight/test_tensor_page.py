"""The tensor page of a trace (jaxbp.insight.tensor_page): shapes line up, each rule's formula, bytes and check."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import trace
from jaxbp.insight import rule_facts
from jaxbp.insight import tensor_page
import jaxbp.ops as ops

X = np.arange(6, dtype=np.float32).reshape(2, 3) / 5
W = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
Y = np.zeros((2, 4), np.float32)


def _steps(page):
  return re.findall(r'<section class="step" data-step="(\d+)"', page)


def test_a_matmul_shows_its_formula_shapes_bytes_and_a_passed_check():
  t = trace(lambda x, w, y: ops.mse(ops.matmul(x, w), y), x=X, w=W, y=Y)
  page = t.to_html("mse(x·w, y)")
  assert _steps(page) == ["0", "1", "2", "3"]  # forward, L (mse), s0 (matmul), done
  matmul = page[page.index('data-step="2"'):page.index('data-step="3"')]
  assert "dX = dY·Wᵀ" in matmul and "dW = Xᵀ·dY" in matmul
  # dW has W's shape [3, 4], dX has X's shape [2, 3]; the upstream has Y's shape [2, 4]
  assert "∂L/∂w</span> <code class=\"shape\">float32[3, 4]</code> <span class=\"ok\">= the shape of w" in matmul
  assert "∂L/∂x</span> <code class=\"shape\">float32[2, 3]</code> <span class=\"ok\">= the shape of x" in matmul
  assert "∂L/∂s0</span> <code class=\"shape\">float32[2, 4]</code>" in matmul
  # the rule keeps X and W: 6 + 12 floats of 4 bytes
  assert 'class="rule-bytes">72 bytes' in matmul
  assert "✓ check_vjp passed" in matmul and "FAILED" not in page


def test_the_bytes_are_those_jax_vjp_keeps():
  x = np.ones((3, 5), np.float32)
  assert rule_facts.residual_bytes(ops.sigmoid, (x,)) == 15 * 4  # the output z only
  assert rule_facts.residual_bytes(lambda a, b: a * b, (x, x)) == 2 * 15 * 4


@jax.custom_vjp
def wrong_square(x):
  return x * x


wrong_square.defvjp(lambda x: (x * x, x), lambda x, g: (g * x,))  # should be 2·g·x


def test_a_failing_rule_is_shown_failed_not_hidden():
  t = trace(lambda x: jnp.sum(wrong_square(x)), x=X)
  node = next(n for n in t.nodes if n.manual)
  page = tensor_page.to_html(t, "sum(wrong_square(x))")
  assert node.op == "wrong_square" and "✗ check_vjp FAILED" in page and "✓ check_vjp" not in page


def test_values_are_a_table_up_to_8_by_8_and_a_heat_map_beyond():
  assert "<table" in tensor_page.array_html(np.ones((8, 8))) and "<rect" not in tensor_page.array_html(np.ones((8, 8)))
  assert "<rect" in tensor_page.array_html(np.ones((8, 9)))
  assert "the first 48×48 of 100×3" not in tensor_page.array_html(np.ones((100, 3)))
  assert "the first 48×3 of 100×3" in tensor_page.array_html(np.ones((100, 3)))


def test_a_page_without_checks_runs_none():
  t = trace(lambda x, w, y: ops.mse(ops.matmul(x, w), y), x=X, w=W, y=Y)
  page = t.to_html(check=False)
  assert "check_vjp" not in page and 'class="rule-bytes">72 bytes' in page


def test_a_scan_steps_over_its_stacked_outputs_not_its_carry():
  """A scan's outputs are its final carry then its stacked ys: 5 steps here, not the carry's 3 entries."""
  def f(x):
    carry, ys = jax.lax.scan(lambda c, x_t: (c + x_t, jnp.sum(c * x_t)), jnp.zeros(3), x)
    return jnp.sum(ys) + jnp.sum(carry)
  page = trace(f, x=np.arange(15, dtype=np.float32).reshape(5, 3) / 10).to_html(check=False)
  assert "step t = 4" in page and "step t = 5" not in page


def test_a_prng_key_input_is_shown_by_its_type():
  t = trace(lambda key, x: jnp.sum(ops.dropout(key, x, 0.5)), key=jax.random.key(0), x=np.ones((4, 4), np.float32))
  page = t.to_html(check=False)
  assert "key&lt;fry&gt;[]" in page
