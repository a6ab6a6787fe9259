"""The version the package reports: the release being built, in the CLI's --version too."""

import pytest

import jaxbp
from jaxbp import cli


def test_version_is_the_release_being_built_and_the_cli_says_it(capsys):
  # It said 0.1.0 through the 0.2 release; bump it with each release (pyproject.toml reads it from here).
  assert jaxbp.__version__ == "0.3.0"
  with pytest.raises(SystemExit) as exited:
    cli.main(["--version"])
  assert exited.value.code == 0 and capsys.readouterr().out.strip() == "jaxbp 0.3.0"
