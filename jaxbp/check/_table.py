"""A table of named checks, and the one loop that runs any selection of it, shared by ``check_vjp`` and
``check_jvp``: each check is a function of the measured state returning its entries, and those the
self-test replays carry the comparison to replay on planted cotangents."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbp.check._args import blame
from jaxbp.check._compare import Entry
from jaxbp.check._compare import Report
from jaxbp.check._compare import failed


class Check(NamedTuple):
  """One named check: ``run(state) -> entries``; ``replay(state, plant) -> entries`` compares the
  rule's cotangents passed through ``plant`` (one planted error) with what was measured, or is None."""
  run: Callable[[Any], list[Entry]]
  replay: Callable[[Any, Callable], list[Entry]] | None = None


def run_checks(table: Mapping[str, Check], names: Sequence[str], state: Any) -> tuple[list[Entry], Any]:
  """Runs each named check; an exception from the rule becomes a failed check naming the input it concerns.

  Returns the entries and the first exception raised (the cause of the report's AssertionError)."""
  entries: list[Entry] = []
  cause = None
  for name in names:
    try:
      found = table[name].run(state)
    except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
      cause = cause or exc
      found = [raised(name, exc, state)]
    entries += found
  return entries, cause


def raised(name: str, exc: Exception, state: Any) -> Entry:
  first = (str(exc).strip().splitlines() or [""])[0]
  return failed(name, blame(exc, state.fn, state.spec), f"raised {type(exc).__name__}: {first[:400]}")


def wants_x64(args: Any) -> bool:
  """Whether the check runs with x64 on: it is on already, or an input is float64."""
  return bool(jax.config.jax_enable_x64) or any(  # type: ignore[attr-defined]
      np.dtype(getattr(x, "dtype", np.float32)) == np.float64 for x in jax.tree.leaves(args)
      if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended))


def name_of(fn: Callable, reference: Callable) -> str:
  return f"{getattr(fn, '__name__', repr(fn))} vs {getattr(reference, '__name__', repr(reference))}"


def finish(report: Report, cause: BaseException | None) -> Report:
  """The report, or an AssertionError carrying it (as message and ``report`` attribute) when a check failed."""
  if not report.passed:
    error = AssertionError(str(report))
    error.report = report  # type: ignore[attr-defined]  # for programs that want the entries
    raise error from cause
  return report
