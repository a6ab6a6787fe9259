"""The expression language of `jaxbp trace`: precedence, safety, errors with positions, the command."""

import argparse
import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from jaxbp.cli import trace as cli_trace
from jaxbp.insight.expr import ExprError
from jaxbp.insight.expr import parse
from jaxbp.insight.trace import grad_by_name
from jaxbp.insight.trace import trace
import jaxbp.ops as ops


def value(source, **inputs):
  return float(parse(source).function(ops.reference)(**inputs))


@pytest.mark.parametrize("source, expect", [
    ("2 + 3 * 4", 14.0),
    ("(2 + 3) * 4", 20.0),
    ("2 ** 3 ** 2", 512.0),        # right-associative
    ("-x ** 2", -9.0),             # ** binds tighter than unary minus
    ("2 ^ -1", 0.5),
    ("10 / 4 / 5", 0.5),           # left-associative
    ("8 − 2 × 3 ÷ 4", 6.5),        # the notes' symbols
    ("1e-1 + .5", 0.6),
    ("max(x, 4) - relu(-x)", 4.0),
    ("leaky_relu(-x, 0.5)", -1.5),
    ("sigmoid(0) + tanh(0) + exp(0) + log(1) + sqrt(4)", 3.5),
])
def test_precedence_and_functions(source, expect):
  inputs = {"x": 3.0} if "x" in parse(source).names else {}
  assert math.isclose(value(source, **inputs), expect, rel_tol=1e-6)


def test_names_in_order_of_first_use():
  assert parse("sigmoid(w0*x0 + w1*x1 + w2)").names == ("w0", "x0", "w1", "x1", "w2")


@pytest.mark.parametrize("source, inputs, position, fragment", [
    ("sigmod(x)", {"x": 1}, 1, "unknown function 'sigmod' (did you mean 'sigmoid'?)"),
    ("x + ", {"x": 1}, 5, "expected a number, a name or '('"),
    ("(x + 1", {"x": 1}, 7, "expected ')'"),
    ("x $ 2", {"x": 1}, 3, "unexpected character '$'"),
    ("x y", {"x": 1, "y": 1}, 3, "unexpected 'y'"),
    ("x * w2", {"x": 1}, 5, "missing input 'w2'"),
    ("x * w_2", {"x": 1, "w2": 1}, 5, "did you mean 'w2'?"),
    ("sigmoid + 1", {}, 1, "is a function"),
    ("sigmoid(x, 2)", {"x": 1}, 1, "takes 1 argument(s), got 2"),
    ("leaky_relu(x, x)", {"x": 1}, 15, "parameter must be a number"),
    ("__import__('os')", {}, 12, "unexpected character"),
    ("x.real", {"x": 1}, 2, "unexpected"),
    ("", {}, 1, "empty expression"),
])
def test_errors_name_the_position(source, inputs, position, fragment):
  with pytest.raises(ExprError) as err:
    parse(source).check_inputs(inputs)
  assert err.value.position + 1 == position
  assert str(err.value).startswith(f"at position {position}: ")
  assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_input_the_expression_never_uses_is_an_error():
  with pytest.raises(ExprError, match="'z' does not appear"):
    parse("x + 1").check_inputs({"x": 1.0, "z": 2.0})


def _expressions():
  """Random expressions of x, y, z from the grammar, kept smooth and finite near the sample point."""
  leaf = st.sampled_from(["x", "y", "z", "0.5", "2", "1.5"])
  unary = ["sigmoid({})", "tanh({})", "-{}", "({})**2", "exp(-({})**2)", "elu({})"]
  binary = ["{} + {}", "{} - {}", "{} * {}", "{} / (1 + ({})**2)", "max({}, {} + 0.25)"]
  return st.recursive(
      leaf, lambda sub: st.one_of(
          st.builds(lambda f, a: f.format(a), st.sampled_from(unary), sub),
          st.builds(lambda f, a, b: f.format(a, b), st.sampled_from(binary), sub, sub)),
      max_leaves=6)


@settings(max_examples=20, deadline=None)
@given(_expressions(), st.tuples(*[st.floats(-2, 2) for _ in range(3)]))
def test_traced_gradients_of_random_expressions_equal_jax_grad_of_the_references(source, point):
  expr = parse(f"({source}) + 0 * (x + y + z)")
  inputs = {"x": point[0] + 0.01, "y": point[1] - 0.013, "z": point[2] + 0.007}
  t = trace(expr.function(ops), **inputs)
  expect = grad_by_name(expr.function(ops.reference), **inputs)
  assert list(expect) == list(inputs)
  for name, g in expect.items():
    np.testing.assert_allclose(t.grads[name], g, rtol=2e-4, atol=1e-5, err_msg=source)


def _run(argv):
  parser = argparse.ArgumentParser()
  cli_trace.configure(parser)
  return cli_trace.run(parser.parse_args(argv))


def test_command_prints_note_001_gradients_and_writes_files(tmp_path, capsys):
  files = [tmp_path / "g.png", tmp_path / "g.svg", tmp_path / "t.md"]
  code = _run(["sigmoid(w0*x0 + w1*x1 + w2)", "w0=2", "x0=-1", "w1=-3", "x1=-2", "w2=-3",
               "--png", str(files[0]), "--svg", str(files[1]), "--markdown", str(files[2])])
  out = capsys.readouterr().out
  assert code == 0
  for name, g in zip(["w0", "x0", "w1", "x1", "w2"], ["-0.20", "0.39", "-0.39", "-0.59", "0.20"]):
    line = next(l for l in out.splitlines() if l.startswith(name + " ") and "." in l)
    assert line.split()[2:] == [g, g, g]  # the trace, jax.grad, jax.grad of the references
  assert all(f.exists() and f.stat().st_size > 0 for f in files)
  assert "| L | sigmoid |" in files[2].read_text()


def test_command_on_an_expression_without_inputs_prints_its_value(capsys):
  assert _run(["2*3"]) == 0
  out = capsys.readouterr().out
  assert "L = 6.00" in out and "agree" in out


@pytest.mark.parametrize("argv, fragment", [
    (["sigmoid(w0*x0", "w0=1", "x0=2"], "at position 14: expected ',' or ')'"),
    (["sigmoid(w0*x0)", "w0=1"], "at position 12: missing input 'x0'"),
    (["w0 * 2", "w0"], "is not NAME=NUMBER"),
    (["w0 * 2", "w0=two"], "'two' is not a number"),
    (["softmax(x)", "x=1"], "at position 1: unknown function 'softmax'"),
    (["s0 * 2", "s0=1"], "would read as node labels"),
])
def test_command_errors_are_one_line_with_exit_code_2(argv, fragment, capsys):
  assert _run(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxbp trace: error: ") and fragment in err and "\n" not in err


def test_picture_without_matplotlib_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
  assert _run(["w0 * 2", "w0=1", "--png", str(tmp_path / "g.png")]) == 2
  err = capsys.readouterr().err.strip()
  assert 'pip install "jaxbp[train]"' in err and "\n" not in err
  assert not (tmp_path / "g.png").exists()
