"""Every example script runs, prints its "note vs computed" table, and exits 0 (all figures agree)."""

import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

from jaxbp.insight.tables import NoteCheck

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
  naming where a picture was written depends on the path given, so it is left out)."""
  def lines(text):
    return [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("wrote ")]

  got, want = lines(printed), lines(pasted)
  stale = f"docs/examples.md is stale for {name}: run `python docs/gen_examples.py > docs/examples.md`"
  assert [NUMBER.sub("#", l) for l in got] == [NUMBER.sub("#", l) for l in want], stale
  for g, w in zip(got, want):
    a, b = (np.array([float(n) for n in NUMBER.findall(l)]) for l in (g, w))
    assert np.allclose(a, b, rtol=5e-3, atol=0), f"{stale}\nprinted: {g}\npage:    {w}"


def test_there_is_one_script_per_worked_example():
  assert [p.name[:2] for p in EXAMPLES] == [f"{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_agrees_with_the_notes(script, tmp_path, monkeypatch, capsys):
  # In-process (JAX is imported once for all ten); the scripts take an output path where they write.
  monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "out.png")])
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as done:
    runpy.run_path(str(script), run_name="__main__")
  out = capsys.readouterr().out
  assert done.value.code == 0, out[-3000:]
  assert "→ all agree" in out
  assert "DIFFERS" not in out and "UNEXPECTEDLY" not in out
  _assert_same_output(out, _pasted_output(script), script.name)


@pytest.mark.parametrize("expect_differ", [False, True])
def test_a_computed_value_that_is_not_finite_never_passes(expect_differ):
  check = NoteCheck("nan")
  assert not check.add("q", 0.0, [1.0, float("nan")], 0.05, expect_differ=expect_differ)
  assert check.exit_code() == 1 and "NOT FINITE" in check.report()
