"""The docs say what the code does: the rules page is generated, pasted outputs are real, the site builds."""

import ast
import contextlib
import importlib.util
import io
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


def test_custom_rule_example_runs_and_matches_the_page(capsys):
  example = _load(ROOT / "examples" / "custom_rule_softplus.py", "custom_rule_softplus")
  assert example.main() == 0
  printed = capsys.readouterr().out
  pasted = _pasted("custom-rule.md", "<!-- output: examples/custom_rule_softplus.py -->")
  assert _shape(pasted) == _shape(printed), "docs/custom-rule.md: paste the script's current output"
  assert "FAILED 4 of 11 checks" in printed  # the planted slip is caught by vjp, fd, jacobian, transpose


def test_custom_rule_page_quotes_the_example_verbatim():
  source = (ROOT / "examples" / "custom_rule_softplus.py").read_text(encoding="utf-8")
  for block in _pasted("custom-rule.md", "<!-- code: examples/custom_rule_softplus.py -->").split("\n"):
    assert block in source, f"docs/custom-rule.md quotes a line the example does not have: {block!r}"


RUN = re.compile(r"<!-- run -->\s*```python\n(.*?)```\s*<!-- output -->\s*```text\n(.*?)```", re.S)


def test_concepts_snippets_print_what_the_page_shows():
  pairs = RUN.findall((DOCS / "concepts.md").read_text(encoding="utf-8"))
  assert len(pairs) == 3
  for code, shown in pairs:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      exec(compile(code, "docs/concepts.md", "exec"), {})  # pylint: disable=exec-used
    assert _shape(out.getvalue()) == _shape(shown), code


def test_training_snippets_use_names_that_exist():
  """Training them takes seconds each (they were run for the page); here: every module.name they use exists."""
  from jaxbp import train  # pylint: disable=import-outside-toplevel
  from jaxbp.train import data  # pylint: disable=import-outside-toplevel
  pairs = RUN.findall((DOCS / "training.md").read_text(encoding="utf-8"))
  assert len(pairs) == 2
  for code, _ in pairs:
    for node in ast.walk(ast.parse(code)):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("data", "train"):
        assert hasattr({"data": data, "train": train}[node.value.id], node.attr), f"{node.value.id}.{node.attr}"
      if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "TrainConfig":
        assert {k.arg for k in node.keywords} <= set(train.TrainConfig._fields)


def test_concepts_trace_is_the_commands_output(capsys):
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["trace", "sigmoid(w0*x0 + w1*x1 + w2)", "w0=2", "x0=-1", "w1=-3", "x1=-2", "w2=-3"]) == 0
  shown = _pasted("concepts.md", "<!-- output: jaxbp trace -->")
  assert shown.replace("wrote circuit.png\n", "").strip() == capsys.readouterr().out.strip()


def test_training_page_shows_a_run_with_the_current_defaults():
  from jaxbp import train  # pylint: disable=import-outside-toplevel
  c = train.TrainConfig()
  run = _pasted("training.md", "<!-- output: jaxbp train --out /tmp/run -->")
  assert f"epoch {c.epochs}/{c.epochs}:" in run and f"{c.optimizer} lr {c.lr};" in run, (
      "jaxbp train's defaults changed: rerun `jaxbp train --out /tmp/run`, paste its output and its "
      "curves.png (docs/img/curves.png) into docs/training.md")
  text = (DOCS / "training.md").read_text(encoding="utf-8")
  assert f"dropout {c.model.dropout})" in text and f"{c.schedule} learning-rate decay for {c.epochs} epochs" in text


def _examples_page():
  """The committed examples page, and the outputs and pictures pasted in it, by script."""
  text = (DOCS / "examples.md").read_text(encoding="utf-8")
  outputs = dict(re.findall(r"<!-- output: examples/(\S+) -->\n```text\n(.*?)\n```", text, re.S))
  images = {}
  for png, name in re.findall(r"!\[(\S+), written by (\S+)\]", text):
    images.setdefault(name, []).append(png)
  return text, outputs, images


def test_examples_page_lists_every_script_with_its_docstring():
  sys.path.insert(0, str(DOCS))
  try:
    gen = _load(DOCS / "gen_examples.py", "gen_examples")
  finally:
    sys.path.remove(str(DOCS))
  text, outputs, images = _examples_page()
  assert set(outputs) == set(gen.scripts()) - set(gen.ELSEWHERE), (
      "docs/examples.md: a script is missing or gone: run `python docs/gen_examples.py > docs/examples.md`")
  assert text == gen.render(outputs, images), (
      "docs/examples.md is out of date with the examples' docstrings: "
      "run `python docs/gen_examples.py > docs/examples.md` and commit it")
  for pngs in images.values():
    assert all((DOCS / "img" / png).is_file() for png in pngs)


def test_site_builds_strict(tmp_path):
  pytest.importorskip("mkdocs")
  pytest.importorskip("material")
  mkdocs = shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent)) or "mkdocs"
  # No -q: mkdocs then drops its warnings before --strict counts them, and a broken link passes.
  result = subprocess.run([mkdocs, "build", "--strict", "-f", str(DOCS / "mkdocs" / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "WARNING" not in result.stderr, result.stderr[-3000:]
