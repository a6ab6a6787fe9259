"""jaxbp trace at its limits (issue 9 §5): deep or long expressions, numbers out of range and output paths
that cannot be written are one-line errors with exit 2; NaN gradients and max's tie are right answers."""

import argparse

import pytest

from jaxbp.cli import trace as cli_trace
from jaxbp.insight.expr import MAX_DEPTH
from jaxbp.insight.expr import MAX_NODES
from jaxbp.insight.expr import parse


def _run(argv):
  parser = argparse.ArgumentParser()
  cli_trace.configure(parser)
  return cli_trace.run(parser.parse_args(argv))


@pytest.mark.parametrize("source, fragment", [
    ("(" * 200 + "x" + ")" * 200, f"nested deeper than {MAX_DEPTH} levels"),
    ("+".join(["x"] * 500), f"more than {MAX_NODES} numbers, names and operations"),
    ("sigmoid(" * 300 + "x" + ")" * 300, f"nested deeper than {MAX_DEPTH} levels"),
    ("-" * 2000 + "x", f"nested deeper than {MAX_DEPTH} levels"),
    ("x + 10**400", "at position 7: 10 ** 400 is too large for a float64"),
    ("x + 0**-1", "at position 6: 0 ** -1 divides by zero"),
    ("x + 1e400", "number 1e400 is too large"),
])
def test_limits_and_constants_are_one_line_errors(source, fragment, capsys):
  assert _run([source, "x=1"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxbp trace: error: ") and fragment in err and "\n" not in err


def test_within_the_limits_parses():
  parse("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH)
  parse("+".join(["x"] * (MAX_NODES // 2)))
  assert parse("x * 2 ** -1").tree.args[1].value == 0.5  # a power of numbers is folded to its number


@pytest.mark.parametrize("flag, name, fragment", [
    ("--png", "missing/g.png", "no folder"),
    ("--png", "a.jpg", "must end in .png"),
    ("--svg", "g.png", "must end in .svg"),
    ("--markdown", "missing/t.md", "no folder"),
])
def test_an_output_that_cannot_be_written_is_refused_before_tracing(flag, name, fragment, tmp_path, capsys):
  assert _run(["x * 2", "x=1", flag, str(tmp_path / name)]) == 2
  out, err = capsys.readouterr()
  assert err.startswith(f"jaxbp trace: error: {flag} ") and fragment in err and "\n" not in err.strip()
  assert out == ""


def test_an_expression_opening_with_a_minus_is_not_a_flag(capsys):
  parser = argparse.ArgumentParser()
  cli_trace.configure(parser)
  args = parser.parse_args(["-x*2", "x=1"])
  assert args.expression == "-x*2"
  assert cli_trace.run(args) == 0
  assert "x      1.00   -2.00              -2.00     -2.00" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["log(x-x)", "x=1"], ["x*2", "x=nan"]])
def test_nan_gradients_on_every_column_agree(argv, capsys):
  assert _run(argv) == 0
  out = capsys.readouterr().out
  assert "agree" in out and "WARNING" not in out and "nan" in out


def test_max_at_a_tie_names_the_documented_rule_and_exits_0(capsys):
  assert _run(["max(a, b)", "a=1", "b=1"]) == 0
  out = capsys.readouterr().out
  assert "WARNING" not in out and "tie of max" in out
  assert "b      1.00   1.00               1.00      0.50" in out  # the rule routes, jnp.maximum splits
