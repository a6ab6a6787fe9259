"""The negative control: errors planted in the rule's cotangents, and which checks see them.

Every comparison of ``check_vjp`` is a function of the rule's cotangents once the reference side has
been measured, so a planted error costs a comparison, not a compilation: the checks of the table that
have a ``replay`` are replayed. For each input the self-test plants: the cotangent negated, its largest
and smallest elements swapped, a constant added (1% of its largest element), and its largest element
scaled by 1 + δ for δ = 10⁻¹ … 10⁻¹². The first three are large errors: each check listed in
``SHOULD_CATCH`` for them must fail, or the check has no power at these inputs (say, a finite-difference
step below the float64 resolution of the inputs), and the self-test fails loudly. The last gives the
smallest relative error each check resolves here.

Power is demanded of a check only for the inputs it actually checked: a check skipped for one input
(the Jacobian of a large input) and run for another is replayed for the other only.
"""

import numpy as np

from jaxbp.check._compare import LARGE
from jaxbp.check._compare import Entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import norm

SHOULD_CATCH = {
    "negated": ("vjp", "jacobian", "finite_differences", "transpose"),
    "swapped": ("vjp", "jacobian"),
    "constant added": ("vjp", "jacobian", "linearity"),
}
LADDER = tuple(10.0 ** -k for k in range(1, 13))


def _plants(c, delta=None, constant=0.0):
  """The planted versions of one cotangent ``c`` (float64); ``delta``: only the scaled one.

  ``constant`` is the term added: ONE value per input, fixed from the rule's own cotangent (not from
  each replayed ``c``: a term proportional to max|c| is no constant, and for a one-element cotangent
  it is merely a rescaling, which linearity rightly cannot see). A true constant K breaks linearity
  in a dtype- and scale-independent way: bwd(0) = K ≠ 0 exactly."""
  flat = c.ravel()
  big, small = int(np.argmax(np.abs(flat))), int(np.argmin(np.abs(flat)))

  def at(i, value):
    out = flat.copy()
    out[i] = value
    return out.reshape(c.shape)
  if delta is not None:
    return at(big, flat[big] * (1 + delta))
  swapped = at(big, flat[small]).ravel()
  swapped[small] = flat[big]
  return {"negated": -c, "swapped": swapped.reshape(c.shape), "constant added": c + constant}


def self_test(m, table, entries) -> list[Entry]:
  """Replays the checks of ``table`` that produced ``entries`` (per input) with planted cotangents."""
  if m.large:
    m.skipped.append(("self_test", "all inputs", f"an input has more than {LARGE:,} elements"))
    return []
  ran = {(e.check, e.input) for e in entries}
  out = []
  for k, label in enumerate(m.labels):
    replays = {name: check.replay for name, check in table.items()
               if check.replay is not None and (name, label) in ran}
    if not replays:
      continue
    size = float(np.max(np.abs(f64(m.manual[k])), initial=0.0))
    if not np.isfinite(size) or size <= 100 * m.tol(m.x[k].dtype)[1]:
      m.notes.append(f"power for {label}: not measured (its cotangent is zero or not finite here)")
      continue
    out += _large_errors(m, k, label, replays)
    m.notes.append(f"power for {label}: smallest error in one element caught: " + ", ".join(
        f"{name} {_smallest(m, k, label, replay)}" for name, replay in replays.items()))
  return out


def _plant(m, k, kind, delta=None):
  def plant(cts):
    c = f64(cts[k])
    rtol = m.tol(m.x[k].dtype)[0]
    constant = max(0.01, 10 * rtol) * float(np.max(np.abs(f64(m.manual[k])), initial=0.0))
    bad = _plants(c, delta) if delta is not None else _plants(c, constant=constant)[kind]
    return [np.asarray(bad, np.asarray(a).dtype) if j == k else a for j, a in enumerate(cts)]
  return plant


def _caught(entries, label):
  return any(not e.passed for e in entries if e.input == label)


def _large_errors(m, k, label, replays):
  out = []
  for kind, checks in SHOULD_CATCH.items():
    c, (rtol, atol) = np.abs(f64(m.manual[k])), m.tol(m.x[k].dtype)[:2]
    if kind == "swapped" and np.ptp(c) < max(0.1, 10 * rtol) * np.max(c) + 10 * atol:
      continue  # the elements are too alike for a swap to be a large error
    for name in checks:
      if name in replays and _visible(m, k, name, kind) and not _caught(replays[name](m, _plant(m, k, kind)),
                                                                        label):
        out.append(Entry("self_test", label, "", np.inf, np.inf, 0.0, 0.0, False,
                         f"{name} has no power here: it passes the rule's cotangent {kind}"))
  return out


def _visible(m, k, name, kind):
  """Whether the planted error is larger than the check's own tolerance at these inputs. Only the
  transpose check can say no to a negated cotangent: it sees ⟨Jᵀ·u, v⟩ change by 2|⟨Jᵀ·u, v⟩|, which
  for a random v nearly orthogonal to Jᵀ·u is below rtol·‖Jᵀ·u‖·‖v‖ (for bfloat16's rtol 5e-2, at
  a few per cent of draws): that is its geometry at these inputs, not a lack of power to demand."""
  if (name, kind) != ("transpose", "negated"):
    return True
  (vs, jvs), (rtol, atol) = m.jv, m.tol(m.x[k].dtype)[:2]
  c, v = np.where(m.masks[1][k], f64(m.manual[k]), 0.0), f64(vs[k])
  scale = max(norm(m.u, m.masks[0]) * norm(jvs[k], m.masks[0]), float(np.linalg.norm(c) * np.linalg.norm(v)))
  return 2 * abs(float(np.vdot(c, v))) > 2 * (atol + rtol * scale)


def _smallest(m, k, label, replay):
  caught = [d for d in LADDER if _caught(replay(m, _plant(m, k, None, d)), label)]
  return f"{min(caught):.0e}" if caught else "none ≥ 1e-12"
