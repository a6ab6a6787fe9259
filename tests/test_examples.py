"""Every example script runs, prints its "note vs computed" table, and exits 0 (all figures agree)."""

import json
import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?")


def _pasted_output(script):
  """The output docs/examples.md shows for ``script`` (docs/gen_examples.py pastes it there)."""
  page = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
  found = re.search(rf"<!-- output: examples/{re.escape(script.name)} -->\n```text\n(.*?)\n```", page, re.S)
  assert found, f"docs/examples.md shows no output for {script.name}"
  return found[1]


def _assert_same_output(printed, pasted, name):
  """Same lines with every number within 0.5%: the page shows what the script prints today (the line
  naming where a picture was written depends on the path given, so it is left out). Round-off is
  printed as a bound (``< 1e-13``, see ``tables.noise_floor``), so no number compared here is noise."""
  got, want = _lines(printed), _lines(pasted)
  stale = f"docs/examples.md is stale for {name}: run `python docs/gen_examples.py > docs/examples.md`"
  assert [NUMBER.sub("#", l) for l in got] == [NUMBER.sub("#", l) for l in want], stale
  for g, w in zip(got, want):
    a, b = (np.array([float(n) for n in NUMBER.findall(l)]) for l in (g, w))
    assert np.allclose(a, b, rtol=5e-3, atol=0), f"{stale}\nprinted: {g}\npage:    {w}"


def _lines(text):
  return [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("wrote ")]


def _report(text):
  """The lines of the "note vs computed" report, from its title to its verdict, numbers as '#'."""
  lines = _lines(text)
  start = next(i for i, l in enumerate(lines) if l.startswith("quantity ")) - 1
  return [NUMBER.sub("#", l) for l in lines[start:]]


# Scripts whose full run takes many seconds: the test runs them on their own small inputs, and compares
# the shape of their report (every check, by name) with the page instead of every number.
SMALL = {"10_gradient_flow": ["--depth", "8"]}


def test_there_is_one_script_per_worked_example():
  numbers = [p.name[:2] for p in EXAMPLES]
  assert numbers[:10] == [f"{i:02d}" for i in range(1, 11)] and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_agrees_with_the_notes(script, tmp_path, monkeypatch, capsys):
  # In-process (JAX is imported once for all ten), in an empty folder that must stay empty: a script
  # writes only where --out says (by default a temporary folder).
  args = SMALL.get(script.stem, []) + (["--out", str(tmp_path / "out.png")] if "--out" in script.read_text() else [])
  work = tmp_path / "cwd"
  work.mkdir()
  monkeypatch.setattr(sys, "argv", [str(script), *args])
  monkeypatch.chdir(work)
  with pytest.raises(SystemExit) as done:
    runpy.run_path(str(script), run_name="__main__")
  out = capsys.readouterr().out
  assert done.value.code == 0, out[-3000:]
  assert "→ all agree" in out
  assert "DIFFERS" not in out and "UNEXPECTEDLY" not in out
  assert not list(work.iterdir()), f"{script.name} wrote into the current folder"
  if script.stem in SMALL:
    assert _report(out) == _report(_pasted_output(script)), f"docs/examples.md is stale for {script.name}"
  else:
    _assert_same_output(out, _pasted_output(script), script.name)


def _notebook_code():
  cells = json.loads((ROOT / "examples" / "notebooks" / "backprop.ipynb").read_text(encoding="utf-8"))["cells"]
  return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_no_example_imports_a_private_module():
  sources = [p.read_text(encoding="utf-8") for p in [*EXAMPLES, ROOT / "examples" / "custom_rule_softplus.py"]]
  for source in [*sources, _notebook_code()]:
    for line in source.splitlines():
      if line.startswith(("import ", "from ")):
        assert not re.search(r"\b_\w", line.split(" import ")[0] + " " + line.split(" import ")[-1]), (
            f"an example imports a private name: {line}")


def test_round_off_prints_as_a_bound():
  check = NoteCheck("noise")
  assert check.add("equal up to round-off", 0.25, 0.25 + 2.0 ** -54, 1e-12)
  assert check.add("a residual", 0.0, 3.4e-16, 1e-12)
  rows = check.report().splitlines()
  assert "< 1e-13" in rows[3] and "e-17" not in rows[3]
  assert rows[4].count("< 1e-13") == 2 and "3.4" not in rows[4]
  assert fmt(1.776e-15, 4, 1e-12) == "< 1e-12" and fmt(8.1284, 4, 1e-12) == "8.1284"


@pytest.mark.parametrize("expect_differ", [False, True])
def test_a_computed_value_that_is_not_finite_never_passes(expect_differ):
  check = NoteCheck("nan")
  assert not check.add("q", 0.0, [1.0, float("nan")], 0.05, expect_differ=expect_differ)
  assert check.exit_code() == 1 and "NOT FINITE" in check.report()
