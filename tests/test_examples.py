"""Every example script runs, prints its "note vs computed" table, and exits 0 (all figures agree)."""

import pathlib
import runpy
import sys

import pytest

from jaxbp._table import NoteCheck

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("[0-9][0-9]_*.py"))


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


@pytest.mark.parametrize("expect_differ", [False, True])
def test_a_computed_value_that_is_not_finite_never_passes(expect_differ):
  check = NoteCheck("nan")
  assert not check.add("q", 0.0, [1.0, float("nan")], 0.05, expect_differ=expect_differ)
  assert check.exit_code() == 1 and "NOT FINITE" in check.report()
