"""The ``jaxbp`` command: one sub-command per module.

Each sub-command is a module named in ``COMMANDS`` (``jaxbp.cli.<name>``, or ``jaxbp.bench``) that
provides ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``.
Importing the ``jaxbp`` package loads JAX (about a
second), which every command needs; the optional extras (scikit-learn, matplotlib, tqdm, torch) are
imported inside ``run`` only, so a missing one is reported as one line rather than at start-up.
"""

import argparse
import importlib
import sys
from typing import NoReturn

import jaxbp

COMMANDS = {
    "train": "jaxbp.cli.train",
    "info": "jaxbp.cli.info",
    "trace": "jaxbp.cli.trace",
    "check": "jaxbp.cli.check",
    "bench": "jaxbp.bench",
}


class _Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line naming the flag (argparse prints the whole usage first)."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
  """The ``jaxbp`` parser with one sub-parser per entry of ``COMMANDS``."""
  parser = _Parser(
      prog="jaxbp",
      description="Backpropagation as explicit Jacobian-transpose rules, in JAX.")
  parser.add_argument("--version", action="version", version=f"jaxbp {jaxbp.__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, module_name in COMMANDS.items():
    module = importlib.import_module(module_name)
    p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    module.configure(p)
    p.set_defaults(_run=module.run)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs ``jaxbp ARGS``; returns the exit status (130 when interrupted by Ctrl-C).

  A command that can say more about an interruption (``train`` names its last checkpoint) catches it
  itself; one that arrives while the sub-commands load or outside such a command ends here, in one line.
  """
  try:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
      parser.print_help()
      return 0
    return args._run(args)
  except KeyboardInterrupt:
    print("jaxbp: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
