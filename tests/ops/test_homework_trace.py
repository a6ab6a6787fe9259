"""Note 002's homework 3.3 traced node by node runs on hand-written rules only: no "(jax)" row."""

import jaxbp
from jaxbp.cli import main
from jaxbp.insight import expr

HOMEWORK = "(w1*x*x + w2*x + b - y)**2"
POINT = {"w1": 2.0, "w2": 2.0, "x": 2.0, "b": 1.0, "y": 9.0}


def test_homework_trace_has_only_manual_rules_and_the_notes_numbers():
  t = jaxbp.trace(expr.parse(HOMEWORK).function(jaxbp.ops), **POINT)
  assert all(node.manual for node in t.nodes), [n.op for n in t.nodes if not n.manual]
  assert [n.op for n in t.nodes][-2:] == ["subtract", "power"]
  assert float(t.output) == 16.0  # note 002, 3.3: loss 16, ∂w1 = 32, ∂w2 = 16, ∂b = 8
  assert {k: float(v) for k, v in t.grads.items() if k in ("w1", "w2", "b")} == {"w1": 32.0, "w2": 16.0, "b": 8.0}


def test_every_operator_and_function_of_the_language_is_a_manual_rule():
  source = "-exp(a)/sqrt(b) + log(a)**0.5 + a**b - softplus(a) * gelu(b) / silu(a)"
  t = jaxbp.trace(expr.parse(source).function(jaxbp.ops), a=2.0, b=3.0)
  assert all(node.manual for node in t.nodes), [n.op for n in t.nodes if not n.manual]
  assert {"negative", "divide", "power", "subtract", "exp", "log", "sqrt"} <= {n.op for n in t.nodes}


def test_jaxbp_trace_prints_no_jax_row(capsys):
  assert main(["trace", HOMEWORK, *(f"{k}={v:g}" for k, v in POINT.items())]) == 0
  out = capsys.readouterr().out
  assert "(jax)" not in out and "power" in out and "subtract" in out
