"""Prove a VJP rule of your own from the shell: ``jaxbp check MODULE:FN --reference MODULE:REF --shapes 4x5,5x3``.

Draws one input per shape (uniform in [-2, 2), ``--seed``), runs ``check_vjp`` and prints its report.
MODULE is a dotted module on the path (the current directory is searched first) or a ``.py`` file.
Exit 0 when every check passes, 1 when one fails, 2 for bad input (one line naming the flag).
"""

import importlib
import importlib.util
import os
import sys

HELP = "prove a custom_vjp of your own against a reference: prints check_vjp's report, exit 1 on failure"
DTYPES = ("float32", "float64", "float16", "bfloat16")


class _BadInput(Exception):
  pass


def configure(parser):
  parser.add_argument("fn", metavar="MODULE:FN", help="the rule, e.g. mypkg.rules:softplus or rules.py:softplus")
  parser.add_argument("--reference", required=True, metavar="MODULE:REF", help="the plain-jnp reference")
  parser.add_argument("--shapes", required=True, help="one shape per argument, e.g. 4x5,5x3 ('scalar' for ())")
  parser.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)} (default float32)")
  parser.add_argument("--checks", default=None, help="comma-separated checks, or 'all' (default: check_vjp's)")
  parser.add_argument("--second-order", action="store_true", help="also check grad of grad")
  parser.add_argument("--seed", type=int, default=0, help="seeds the inputs and the checks (default 0)")


def _load(spec, flag):
  if spec.count(":") != 1 or not all(spec.split(":")):
    raise _BadInput(f"{flag}: expected MODULE:NAME, got {spec!r}")
  module_name, name = spec.split(":")
  try:
    if module_name.endswith(".py"):
      if not os.path.isfile(module_name):
        raise _BadInput(f"{flag}: no file {module_name}")
      loaded = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
      module = importlib.util.module_from_spec(loaded)  # type: ignore[arg-type]
      loaded.loader.exec_module(module)  # type: ignore[union-attr]
    else:
      sys.path.insert(0, os.getcwd())
      module = importlib.import_module(module_name)
  except _BadInput:
    raise
  except Exception as exc:  # pylint: disable=broad-except  # whatever the user's module raises
    raise _BadInput(f"{flag}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
  fn = getattr(module, name, None)
  if not callable(fn):
    raise _BadInput(f"{flag}: {module_name} has no function {name!r}")
  return fn


def _shapes(text):
  shapes: list[tuple[int, ...]] = []
  for part in text.split(","):
    part = part.strip()
    if part == "scalar":
      shapes.append(())
      continue
    dims = part.split("x")
    if not part or not all(d.isdigit() for d in dims):
      raise _BadInput(f"--shapes: {part!r} is not a shape like 4x5 (or 'scalar')")
    shapes.append(tuple(int(d) for d in dims))
  return shapes


def run(args):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxbp.check import ALL_CHECKS  # pylint: disable=import-outside-toplevel
  from jaxbp.check import check_vjp  # pylint: disable=import-outside-toplevel
  from jaxbp.ops.sampling import uniform  # pylint: disable=import-outside-toplevel
  try:
    if args.dtype not in DTYPES:
      raise _BadInput(f"--dtype: {args.dtype!r} is not one of {', '.join(DTYPES)}")
    checks = None if args.checks is None else ("all" if args.checks == "all" else tuple(args.checks.split(",")))
    if checks not in (None, "all") and set(checks) - set(ALL_CHECKS):
      raise _BadInput(f"--checks: unknown {sorted(set(checks) - set(ALL_CHECKS))}; choose from {', '.join(ALL_CHECKS)}")
    shapes = _shapes(args.shapes)
    fn, ref = _load(args.fn, "MODULE:FN"), _load(args.reference, "--reference")
  except _BadInput as exc:
    print(f"jaxbp check: {exc}", file=sys.stderr)
    return 2
  rng = np.random.default_rng(args.seed)
  dtype = jnp.dtype(args.dtype)
  xs = [uniform(rng, s, dtype) for s in shapes]
  with jax.enable_x64(args.dtype == "float64"):
    try:
      report = check_vjp(fn, ref, *xs, checks=checks, second_order=args.second_order, seed=args.seed)
    except AssertionError as failure:
      print(failure)
      return 1
    except (TypeError, ValueError) as exc:  # the inputs do not fit the rule: a bad --shapes or --dtype
      first = (str(exc).strip().splitlines() or [""])[0]
      print(f"jaxbp check: --shapes {args.shapes} --dtype {args.dtype}: {type(exc).__name__}: {first}",
            file=sys.stderr)
      return 2
  print(report)
  return 0
