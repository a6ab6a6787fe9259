"""``check_vjp``: the table of its checks, the selection, the self-test, and the report."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxbp.check import _classic
from jaxbp.check import _fd
from jaxbp.check import _more
from jaxbp.check._args import Args
from jaxbp.check._compare import FD_TOLERANCE
from jaxbp.check._compare import Report
from jaxbp.check._measure import Measured
from jaxbp.check._measure import Options
from jaxbp.check._power import self_test as _self_test
from jaxbp.check._sharded import sharded_entries
from jaxbp.check._table import Check
from jaxbp.check._table import finish
from jaxbp.check._table import name_of
from jaxbp.check._table import raised
from jaxbp.check._table import run_checks
from jaxbp.check._table import wants_x64
from jaxbp.check._transforms import transforms

CHECKS = ("forward", "vjp", "finite_differences", "jacobian", "transpose", "jit", "vmap", "second_order")
# Checks beyond the classic eight; the first four run by default (they cost one more call of the compiled
# backward, or a trace), the transform matrix and sharding when named (or ``checks="all"``, which runs
# every check but ``sharded``: that one starts a subprocess with 8 host devices).
EXTRA_CHECKS = ("linearity", "cotangents", "determinism", "residuals", "transforms", "sharded")
ALL_CHECKS = CHECKS + EXTRA_CHECKS
DEFAULT_CHECKS = CHECKS[:-1] + EXTRA_CHECKS[:4]

TABLE = {
    "forward": Check(_classic.forward),
    "vjp": Check(_classic.vjp, lambda m, plant: _classic.compare_vjp(m, plant(m.manual))),
    "finite_differences": Check(_fd.check, lambda m, plant: _fd.compare(m, plant(m.fd_manual))),
    "jacobian": Check(_classic.jacobian, lambda m, plant: _classic.compare_jacobian(m, plant(m.manual))),
    "transpose": Check(_classic.transpose, lambda m, plant: _classic.compare_transpose(m, plant(m.manual))),
    "jit": Check(_classic.jit),
    "vmap": Check(_classic.vmap),
    "second_order": Check(_classic.second_order),
    "linearity": Check(_more.linearity,
                       lambda m, plant: _more.compare_linearity(m, *(plant(c) for c in m.lin_data))),
    "cotangents": Check(_more.cotangents),
    "determinism": Check(_more.determinism),
    "residuals": Check(_more.residuals),
    "transforms": Check(transforms),
    "sharded": Check(lambda m: sharded_entries(m.fn, m.ref, m.spec, m.u, m.tol, m.skipped)),
}
assert tuple(TABLE) == ALL_CHECKS


def _select(checks, second_order):
  if checks == "all":
    return tuple(c for c in ALL_CHECKS if c != "sharded")
  names = DEFAULT_CHECKS + (("second_order",) if second_order else ())
  if checks is not None:
    if isinstance(checks, str):
      checks = (checks,)
    unknown = set(checks) - set(ALL_CHECKS)
    if unknown:
      raise ValueError(f"check_vjp: unknown checks {sorted(unknown)}; choose from {ALL_CHECKS} or 'all'")
    names = tuple(checks)
  return tuple(c for c in ALL_CHECKS if c in names)


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
      ``sharded``); default: ``DEFAULT_CHECKS`` (the first seven of ``CHECKS``, then linearity,
      cotangents, determinism and residuals), plus ``second_order`` if asked for.
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
    m = Measured(fn, reference, Args(fn, args, kwargs or {}, argnums), opts, np.random.default_rng(seed))
    entries, cause = run_checks(TABLE, names, m)
    if self_test and all(e.passed for e in entries):
      try:
        entries += _self_test(m, {n: TABLE[n] for n in names}, entries)
      except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
        entries.append(raised("self_test", exc, m))
        cause = cause or exc
  return finish(Report(name_of(fn, reference), tuple(entries), tuple(m.skipped), tuple(m.notes)), cause)
