"""The ``jaxbp`` entry point itself: an interruption outside a command's own handling is one line, exit 130."""

import jaxbp.cli as cli


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
  def interrupted():
    raise KeyboardInterrupt
  monkeypatch.setattr(cli, "build_parser", interrupted)
  assert cli.main(["info"]) == 130
  err = capsys.readouterr().err
  assert err == "jaxbp: interrupted\n"


def test_ctrl_c_inside_a_command_without_its_own_handler_is_one_line(monkeypatch, capsys):
  import jaxbp.cli.info as info  # pylint: disable=import-outside-toplevel

  def run(args):
    raise KeyboardInterrupt
  monkeypatch.setattr(info, "run", run)
  assert cli.main(["info"]) == 130
  assert capsys.readouterr().err == "jaxbp: interrupted\n"
