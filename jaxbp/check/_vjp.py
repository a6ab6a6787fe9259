"""``check_vjp``: runs the selected checks, turns what the rule raises into failed checks, and reports."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxbp.check._args import Args
from jaxbp.check._args import blame
from jaxbp.check._compare import FD_TOLERANCE
from jaxbp.check._compare import Report
from jaxbp.check._compare import failed
from jaxbp.check._core import Options
from jaxbp.check._power import PowerCheck
from jaxbp.check._sharded import sharded_entries

CHECKS = ("forward", "vjp", "finite_differences", "jacobian", "transpose", "jit", "vmap", "second_order")
# Checks beyond the classic eight, run when named in ``checks`` (or with ``checks="all"``, which runs
# every check but ``sharded``: that one starts a subprocess with 8 host devices).
EXTRA_CHECKS = ("linearity", "cotangents", "determinism", "residuals", "transforms", "sharded")
ALL_CHECKS = CHECKS + EXTRA_CHECKS


class VjpChecker(PowerCheck):
  """Every check of ``check_vjp`` on one set of inputs."""

  def sharded(self):
    return sharded_entries(self.fn, self.ref, self.spec, self.u, self.tol, self.skipped)


def _select(checks, second_order):
  if checks == "all":
    return tuple(c for c in ALL_CHECKS if c != "sharded")
  names = tuple(CHECKS[:-1]) + (("second_order",) if second_order else ())
  if checks is not None:
    if isinstance(checks, str):
      checks = (checks,)
    unknown = set(checks) - set(ALL_CHECKS)
    if unknown:
      raise ValueError(f"check_vjp: unknown checks {sorted(unknown)}; choose from {ALL_CHECKS} or 'all'")
    names = tuple(c for c in ALL_CHECKS if c in checks)
  return names


def wants_x64(args) -> bool:
  return bool(jax.config.jax_enable_x64) or any(  # type: ignore[attr-defined]

      np.dtype(getattr(x, "dtype", np.float32)) == np.float64 for x in jax.tree.leaves(args)
      if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended))


def run_checks(checker, names, fn, spec):
  """Runs each check; an exception from the rule becomes a failed check naming the input it concerns."""
  entries, cause, ran = [], None, []
  for name in names:
    try:
      found = getattr(checker, name)()
    except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
      cause = cause or exc
      first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
      found = [failed(name, blame(exc, fn, spec), f"raised {type(exc).__name__}: {first[:400]}")]
    entries += found
    if found:
      ran.append(name)
  return entries, cause, ran


def _name(fn, reference):
  return f"{getattr(fn, '__name__', repr(fn))} vs {getattr(reference, '__name__', repr(reference))}"


def finish(report: Report, cause) -> Report:
  if not report.passed:
    error = AssertionError(str(report))
    error.report = report  # type: ignore[attr-defined]  # for programs that want the entries
    raise error from cause
  return report


def check_vjp(fn: Callable, reference: Callable, *args: Any, kwargs: dict | None = None,
              argnums: int | Sequence[int] | None = None, checks: str | Sequence[str] | None = None,
              second_order: bool = False, self_test: bool = True, rtol: float | None = None,
              atol: float | None = None, fd_eps: float = 1e-5, fd_rtol: float | None = None,
              directions: int = 3, jacobian_max_size: int = 100_000, memory_factor: float = 64,
              memory_floor: int = 256 << 20, nondet_tol: float = 0.0, seed: int = 0) -> Report:
  """Proves ``fn``'s VJP rule against ``reference``; see ``jaxbp.check`` for the checks.

  Args:
    fn: the function whose gradient is hand-written (a ``jax.custom_vjp``, or built from them).
    reference: the same function in plain ``jnp`` that JAX differentiates itself; same signature.
    *args: the inputs, arrays or pytrees of arrays. Floating-point array leaves are differentiated;
      integer arrays, PRNG keys and Python scalars are passed through unchanged.
    kwargs: keyword arguments passed unchanged to ``fn`` and ``reference`` (e.g. ``axis=-1``).
    argnums: position or positions of ``args`` to differentiate (default: all); the rest are passed
      through unchanged, so a rule that returns no gradient for an array (``None``) can be checked.
    checks: names from ``CHECKS`` and ``EXTRA_CHECKS`` to run, or ``"all"`` (every check but
      ``sharded``); default: the first seven of ``CHECKS`` (plus ``second_order`` if asked for).
    second_order: also run ``second_order`` (Hessian-vector products through the rule).
    self_test: replay the comparisons with errors planted in the rule's cotangents (no compilation):
      report the smallest error each check resolves, and fail a check that cannot see a large one.
    rtol, atol: override the per-dtype ``TOLERANCES`` of every check but finite differences.
    fd_eps: step of the central differences, relative to ``max(1, max|x|)``.
    fd_rtol: relative tolerance of the finite-difference check (default ``FD_TOLERANCE``).
    directions: random directions per input for the finite-difference check, at least 1.
    jacobian_max_size: largest Jacobian (entries, outputs × input) the ``jacobian`` check builds.
    memory_factor, memory_floor: no check allocates more than ``max(memory_factor × the rule's own
      memory, memory_floor)`` bytes (the rule's memory: the compiled reference VJP's arguments,
      outputs and temporaries); a check that would is skipped and reported with the reason.
    nondet_tol: largest difference allowed between two runs of the compiled backward (``determinism``).
    seed: seeds the random cotangents, tangents and directions.

  Returns:
    A ``Report``: every check of every input with its errors and tolerance, the skipped checks with
    why, and notes (the self-test's power, the residual audit).

  Raises:
    AssertionError: with the report as its message (and as its ``report`` attribute) when any check
      fails, including when the rule raises (e.g. a cotangent of the wrong shape); the first line
      names each failing check, its input and the size of the error.
    ValueError, TypeError: for nothing to check (no floating-point input), a non-float output,
      ``directions`` below 1 or an unknown check.
  """
  if not isinstance(directions, int) or directions < 1:
    raise ValueError(f"check_vjp: 'directions' must be an integer of at least 1, got {directions!r}")
  names = _select(checks, second_order)
  argnums = (argnums,) if isinstance(argnums, int) else argnums
  fd_tol = (FD_TOLERANCE[0] if fd_rtol is None else fd_rtol, FD_TOLERANCE[1])
  opts = Options(rtol, atol, fd_eps, fd_tol, directions, jacobian_max_size, memory_factor, memory_floor,
                 nondet_tol)
  with jax.enable_x64(wants_x64(args)):
    spec = Args(fn, args, kwargs or {}, argnums)
    checker = VjpChecker(fn, reference, spec, opts, np.random.default_rng(seed))
    entries, cause, ran = run_checks(checker, names, fn, spec)
    if self_test and all(e.passed for e in entries):
      more, cause2 = _self_test(checker, ran, fn, spec)
      entries += more
      cause = cause or cause2
  return finish(Report(_name(fn, reference), tuple(entries), tuple(checker.skipped), tuple(checker.notes)),
                cause)


def _self_test(checker, ran, fn, spec):
  try:
    return checker.self_test(ran), None
  except Exception as exc:  # pylint: disable=broad-except
    first = (str(exc).strip().splitlines() or [""])[0]
    return [failed("self_test", blame(exc, fn, spec), f"raised {type(exc).__name__}: {first[:400]}")], exc
