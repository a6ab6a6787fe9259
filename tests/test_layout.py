"""The package's layout holds: no private name crosses a package boundary, and every file stays short.

A package is ``jaxbp.<name>`` (``jaxbp/ops/``, ``jaxbp/train/``, ...); the modules at the top of ``jaxbp/``
form the package ``jaxbp``. Inside a package, ``_name`` modules and names are shared freely; what another
package needs is published by the package that owns it (``jaxbp.ops.sampling``, ``jaxbp.models.field_types``).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxbp"
MAX_LINES = 400


def _package(module: str) -> str:
  """``jaxbp.ops`` for ``jaxbp.ops._util`` or ``jaxbp.ops``; ``jaxbp`` for a module at the top."""
  parts = module.split(".")
  return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "jaxbp"


def private_imports(path: pathlib.Path, source: str) -> list[str]:
  """``file:line: what`` for each import in ``source`` of a ``_name`` module or name of another package."""
  module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
  here = _package(module)
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("jaxbp"):
      targets = [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      targets = [a.name for a in node.names if a.name.startswith("jaxbp")]
    else:
      continue
    for target in targets:
      parts = target.split(".")
      private = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
      if private is not None and _package(".".join(parts[:private])) != here:
        found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {target}")
  return found


def test_no_private_import_crosses_a_package():
  found = [hit for path in sorted(ROOT.rglob("*.py")) for hit in private_imports(path, path.read_text())]
  assert not found, "private names imported across packages (publish them in their package):\n" + "\n".join(found)


@pytest.mark.parametrize("source, where, bad", [
    ("from jaxbp.models import _registry", "cli/x.py", True),
    ("from jaxbp.ops._registry import uniform", "testing.py", True),
    ("import jaxbp.train._ckptcheck", "cli/x.py", True),
    ("from jaxbp import _version", "cli/x.py", True),
    ("from jaxbp.ops._registry import uniform", "ops/sampling.py", False),   # inside its package
    ("from jaxbp.ops.sampling import uniform", "testing.py", False),         # published
    ("from jaxbp.models import field_types", "train/config.py", False),
    ("from . import _util", "cli/x.py", False),                               # relative: same package
])
def test_the_scan_tells_a_crossing_from_a_local_import(source, where, bad):
  assert bool(private_imports(ROOT / where, source)) is bad


def test_every_file_is_short():
  long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines()))
          > MAX_LINES}
  assert not long, f"files over {MAX_LINES} lines (split them by topic): {long}"


@pytest.mark.parametrize("name", ["jaxbp.models", "jaxbp.train"])
def test_a_public_namespace_lists_its_names_sorted(name):
  import importlib  # pylint: disable=import-outside-toplevel
  names = importlib.import_module(name).__all__
  assert names == sorted(names)
