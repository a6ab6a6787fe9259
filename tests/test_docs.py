"""The docs say what the code does: the rules page is generated, pasted outputs are real, the site builds."""

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[+-]\d+)?")


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _pasted(page, marker):
  """The fenced blocks of ``page`` that follow each ``marker`` line, joined."""
  text = (DOCS / page).read_text(encoding="utf-8")
  blocks = re.findall(re.escape(marker) + r"\s*```[a-z]*\n(.*?)```", text, re.S)
  assert blocks, f"docs/{page} has no output block after {marker!r}"
  return "\n".join(blocks)


def _shape(text):
  """The non-blank lines with every number as '#': what a run must reproduce, not its last digits."""
  return [NUMBER.sub("#", line).rstrip() for line in text.splitlines() if line.strip()]


def test_rules_page_is_generated_from_the_rules():
  gen = _load(DOCS / "gen_rules.py", "gen_rules")
  committed = (DOCS / "rules.md").read_text(encoding="utf-8")
  assert committed == gen.render(), (
      "docs/rules.md is out of date with the rules' docstrings or code: "
      "run `python docs/gen_rules.py > docs/rules.md` and commit it")


def test_rules_page_has_every_rule():
  from jaxbp.ops import REGISTRY  # pylint: disable=import-outside-toplevel
  text = (DOCS / "rules.md").read_text(encoding="utf-8")
  for name in REGISTRY:
    assert f"### `{name}`" in text


def test_custom_rule_example_runs_and_matches_the_page(capsys):
  example = _load(ROOT / "examples" / "custom_rule_softplus.py", "custom_rule_softplus")
  assert example.main() == 0
  printed = capsys.readouterr().out
  pasted = _pasted("custom-rule.md", "<!-- output: examples/custom_rule_softplus.py -->")
  assert _shape(pasted) == _shape(printed), "docs/custom-rule.md: paste the script's current output"
  assert "FAILED 4 of 7 checks" in printed  # the planted slip is caught by vjp, fd, jacobian, transpose


def test_custom_rule_page_quotes_the_example_verbatim():
  source = (ROOT / "examples" / "custom_rule_softplus.py").read_text(encoding="utf-8")
  for block in _pasted("custom-rule.md", "<!-- code: examples/custom_rule_softplus.py -->").split("\n"):
    assert block in source, f"docs/custom-rule.md quotes a line the example does not have: {block!r}"


def test_site_builds_strict(tmp_path):
  pytest.importorskip("mkdocs")
  pytest.importorskip("material")
  mkdocs = shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent)) or "mkdocs"
  result = subprocess.run([mkdocs, "build", "--strict", "-q", "-f", str(DOCS / "mkdocs" / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
  assert result.returncode == 0, result.stderr[-3000:]
