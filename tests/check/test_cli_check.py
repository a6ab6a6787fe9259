"""jaxbp check: prints check_vjp's report; exit 0 on a pass, 1 on a failure, 2 (one line) for bad input."""

import textwrap

import pytest

from jaxbp.cli import main

RULES = textwrap.dedent("""
    import jax

    @jax.custom_vjp
    def mm(x, w):
      return x @ w
    mm.defvjp(lambda x, w: (x @ w, (x, w)), lambda r, g: (g @ r[1].T, r[0].T @ g))

    @jax.custom_vjp
    def mm_bad(x, w):
      return x @ w
    mm_bad.defvjp(lambda x, w: (x @ w, (x, w)), lambda r, g: (g @ r[1].T, 2 * (r[0].T @ g)))

    def ref(x, w):
      return x @ w
    """)


@pytest.fixture
def rules(tmp_path, monkeypatch):
  (tmp_path / "cli_rules.py").write_text(RULES)
  monkeypatch.chdir(tmp_path)
  return tmp_path / "cli_rules.py"


def test_pass_and_fail(rules, capsys):
  assert main(["check", "cli_rules:mm", "--reference", "cli_rules:ref", "--shapes", "4x5,5x3"]) == 0
  assert capsys.readouterr().out.startswith("check_vjp(mm vs ref): all ")
  assert main(["check", f"{rules}:mm_bad", "--reference", f"{rules}:ref", "--shapes", "4x5,5x3",
               "--dtype", "float64", "--checks", "vjp"]) == 1
  out = capsys.readouterr().out
  assert "FAILED 1 of 2 checks: vjp for input 'w' (args[1])" in out


@pytest.mark.parametrize("argv, says", [
    (["cli_rules:nope", "--reference", "cli_rules:ref", "--shapes", "4x5,5x3"], "MODULE:FN: cli_rules has no"),
    (["cli_rules:mm", "--reference", "missing_mod:ref", "--shapes", "4x5"], "--reference: cannot import"),
    (["cli_rules:mm", "--reference", "cli_rules:ref", "--shapes", "4xa"], "--shapes: '4xa' is not a shape"),
    (["cli_rules:mm", "--reference", "cli_rules:ref", "--shapes", "4x5,5x3", "--dtype", "int8"], "--dtype"),
    (["cli_rules:mm", "--reference", "cli_rules:ref", "--shapes", "4x5,4x3"], "--shapes 4x5,4x3"),
    (["cli_rules", "--reference", "cli_rules:ref", "--shapes", "4x5"], "MODULE:FN: expected MODULE:NAME"),
])
def test_bad_input_is_one_line_exit_2(rules, capsys, argv, says):
  assert main(["check", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxbp check: ") and says in err and len(err.strip().splitlines()) == 1
