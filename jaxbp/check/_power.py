"""The negative control: errors planted in the rule's cotangents, and which checks see them.

Every comparison of ``check_vjp`` is a function of the rule's cotangents once the reference side has
been measured, so a planted error costs a comparison, not a compilation. For each input the self-test
plants: the cotangent negated, its largest and smallest elements swapped, a constant added (1% of its
largest element), and its largest element scaled by 1 + δ for δ = 10⁻¹ … 10⁻¹². The first three are
large errors: each check listed in ``SHOULD_CATCH`` for them must fail, or the check has no power at
these inputs (say, a finite-difference step below the float64 resolution of the inputs), and the
self-test fails loudly. The last gives the smallest relative error each check resolves here.
"""

import numpy as np

from jaxbp.check._compare import LARGE
from jaxbp.check._compare import Entry
from jaxbp.check._compare import f64
from jaxbp.check._more import MoreChecks

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
  return {"negated": -c, "swapped": swapped.reshape(c.shape),
          "constant added": c + constant}


class PowerCheck(MoreChecks):
  """The self-test: replays the ``compare_*`` methods on planted cotangents."""

  def _replays(self, names):
    """check name -> (compare(planted-or-not function of (k, array)) -> entries)."""
    replays = {}
    if "vjp" in names:
      replays["vjp"] = lambda plant: self.compare_vjp(plant(self.manual))
    if "jacobian" in names and self.jtu:
      replays["jacobian"] = lambda plant: self.compare_jacobian(plant(self.manual))
    if "transpose" in names:
      replays["transpose"] = lambda plant: self.compare_transpose(plant(self.manual))
    if "finite_differences" in names:
      replays["finite_differences"] = lambda plant: self.compare_fd(plant(self.fd_manual))
    if "linearity" in names:
      replays["linearity"] = lambda plant: self.compare_linearity(*(plant(c) for c in self.lin_data))
    return replays

  def self_test(self, names):
    if any(np.size(x) > LARGE for x in self.x):
      self.skipped.append(("self_test", "all inputs", f"an input has more than {LARGE:,} elements"))
      return []
    replays, entries = self._replays(names), []
    if not replays:
      return []
    for k, label in enumerate(self.labels):
      size = float(np.max(np.abs(f64(self.manual[k])), initial=0.0))
      if not np.isfinite(size) or size <= 100 * self.tol(self.x[k].dtype)[1]:
        self.notes.append(f"power for {label}: not measured (its cotangent is zero or not finite here)")
        continue
      entries += self._large_errors(k, label, replays)
      self.notes.append(f"power for {label}: smallest error in one element caught: " + ", ".join(
          f"{name} {self._smallest(k, label, replay)}" for name, replay in replays.items()))
    return entries

  def _plant(self, k, kind, delta=None):
    def plant(cts):
      c = f64(cts[k])
      rtol = self.tol(self.x[k].dtype)[0]
      constant = max(0.01, 10 * rtol) * float(np.max(np.abs(f64(self.manual[k])), initial=0.0))
      bad = _plants(c, delta) if delta is not None else _plants(c, constant=constant)[kind]
      return [np.asarray(bad, np.asarray(a).dtype) if j == k else a for j, a in enumerate(cts)]
    return plant

  @staticmethod
  def _caught(entries, label):
    return any(not e.passed for e in entries if e.input == label)

  def _large_errors(self, k, label, replays):
    out = []
    for kind, checks in SHOULD_CATCH.items():
      c, (rtol, atol) = np.abs(f64(self.manual[k])), self.tol(self.x[k].dtype)
      if kind == "swapped" and np.ptp(c) < max(0.1, 10 * rtol) * np.max(c) + 10 * atol:
        continue  # the elements are too alike for a swap to be a large error
      for name in checks:
        if name in replays and not self._caught(replays[name](self._plant(k, kind)), label):
          out.append(Entry("self_test", label, "", np.inf, np.inf, 0.0, 0.0, False,
                           f"{name} has no power here: it passes the rule's cotangent {kind}"))
    return out

  def _smallest(self, k, label, replay):
    caught = [d for d in LADDER if self._caught(replay(self._plant(k, None, d)), label)]
    return f"{min(caught):.0e}" if caught else "none ≥ 1e-12"
