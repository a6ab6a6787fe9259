"""How two values are compared: tolerances, the per-element criterion, one ``Entry`` per comparison."""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# (rtol, atol) by the dtype of the values compared; finite differences always run in float64.
TOLERANCES = {
    np.dtype(jnp.bfloat16): (5e-2, 1e-3),
    np.dtype(np.float16): (1e-2, 1e-4),
    np.dtype(np.float32): (1e-4, 1e-6),
    np.dtype(np.float64): (1e-8, 1e-12),
}
FD_TOLERANCE = (1e-6, 1e-12)
# The per-element floor, in units of the dtype's machine epsilon times the largest expected value: the
# rounding a correct rule summing in another order than its reference may show on a small element.
FLOOR_ULPS = 32
LARGE = 1 << 22  # arrays with more elements are compared on the device, never copied to float64


@dataclasses.dataclass(frozen=True)
class Entry:
  """One check of one input (or of one output, for ``forward``)."""
  check: str
  input: str     # e.g. "input 'w' (args[1])", "output[0]"
  dtype: str     # dtype the comparison was made at
  abs_err: float
  rel_err: float
  rtol: float
  atol: float
  passed: bool
  detail: str = ""  # where the largest error sits, or the exception raised

  def __str__(self):
    if self.detail.startswith("raised"):
      return f"FAIL {self.check:<18} {self.input:<28} {self.detail}"
    head = (f"{'ok  ' if self.passed else 'FAIL'} {self.check:<18} {self.input:<28} {self.dtype:<8}"
            f" abs err {self.abs_err:.2e}  rel err {self.rel_err:.2e}"
            f"  (tolerance: rtol {self.rtol:.0e}, atol {self.atol:.0e})")
    return head + (f"\n       {self.detail}" if self.detail and not self.passed else "")


class Report(NamedTuple):
  """What a check found: every check of every input, the checks it skipped with why, and notes.

  ``notes`` are measurements that pass or fail nothing (the residual audit, the power of each check).
  """
  name: str
  entries: tuple   # of Entry
  skipped: tuple   # of (check, input, reason)
  notes: tuple = ()  # of str
  kind: str = "check_vjp"

  @property
  def passed(self) -> bool:
    return all(e.passed for e in self.entries)

  @property
  def failures(self) -> tuple:
    return tuple(e for e in self.entries if not e.passed)

  def _repr_html_(self) -> str:
    """What Jupyter shows: a table of every check, passed, failed or skipped (``jaxbp.insight.display``)."""
    from jaxbp.insight import display
    return display.report_html(self)

  def __str__(self):
    bad, raised = self.failures, dict[tuple, tuple]()
    for e in bad:  # one line per exception, however many checks it broke
      if e.detail.startswith("raised"):
        raised.setdefault((e.input, e.detail.split(":")[0]), (e.detail, []))[1].append(e.check)
    found = [f"{e.check} for {e.input} off by {e.abs_err:.3g} (rel {e.rel_err:.3g})"
             for e in bad if not e.detail.startswith("raised")]
    found += [f"{', '.join(c)} for {i} {d}" for (i, _), (d, c) in raised.items()]
    head = f"{self.kind}({self.name}): " + (
        f"all {len(self.entries)} checks passed" if not bad else
        f"FAILED {len(bad)} of {len(self.entries)} checks: " + "; ".join(found))
    lines = [head] + [f"  {e}" for e in self.entries]
    lines += [f"  skipped {c} for {i}: {why}" for c, i, why in self.skipped]
    lines += [f"  {n}" for n in self.notes]
    return "\n".join(lines)


class Tolerance(NamedTuple):
  """(rtol, atol) of a comparison; ``floor_dtype``: the dtype whose epsilon sets the per-element floor
  (None: the compared values' own), coarser for values computed from a lower-precision input."""
  rtol: float
  atol: float
  floor_dtype: Any = None


def tolerance(dtype, rtol, atol, floor_dtype=None) -> Tolerance:
  default = TOLERANCES.get(np.dtype(dtype), TOLERANCES[np.dtype(np.float32)])
  return Tolerance(default[0] if rtol is None else rtol, default[1] if atol is None else atol, floor_dtype)


def floor(dtype, rtol):
  """The per-element floor, relative to the largest expected value: FLOOR_ULPS·ε, at most ``rtol``."""
  eps = float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.inexact) else 0.0
  return min(FLOOR_ULPS * eps, rtol)


def f64(x):
  return np.asarray(x, dtype=np.float64)


@jax.jit
def _device_stats(g, w, rtol, atol, fl, mag):
  """The statistics of ``_host_stats`` on the device, for arrays too large to copy to float64."""
  both_nan = jnp.isnan(g) & jnp.isnan(w)
  diff = jnp.where((g == w) | both_nan, 0, jnp.abs(g - w))
  diff = jnp.where(jnp.isnan(diff), jnp.inf, diff)
  scale = jnp.max(jnp.where(jnp.isfinite(w), jnp.abs(w), 0), initial=0)
  mag = jnp.abs(jnp.where(jnp.isfinite(w), w, 0)) if mag is None else mag
  bound = atol + rtol * mag + fl * jnp.maximum(scale, jnp.max(mag, initial=0))
  excess = jnp.where(diff > 0, diff / bound, 0).ravel()
  worst = jnp.argmax(excess)
  return jnp.max(diff, initial=0), scale, excess[worst], worst, g.ravel()[worst], w.ravel()[worst]


def _host_stats(g, w, rtol, atol, fl, mag):
  g, w = f64(g), f64(w)
  diff = np.where((g == w) | (np.isnan(g) & np.isnan(w)), 0.0, np.abs(g - w))
  diff = np.where(np.isnan(diff), np.inf, diff)
  finite = np.abs(w[np.isfinite(w)])
  scale = float(finite.max()) if finite.size else 0.0
  mag = np.abs(np.where(np.isfinite(w), w, 0.0)) if mag is None else f64(mag)
  bound = atol + rtol * mag + fl * max(scale, float(np.max(mag, initial=0.0)))
  with np.errstate(invalid="ignore", divide="ignore"):
    excess = np.where(diff > 0, diff / bound, 0.0).ravel()
  worst = int(np.argmax(excess))
  return float(diff.max()), scale, float(excess[worst]), worst, g.ravel()[worst], w.ravel()[worst]


def array_entry(check, label, got, want, tol, dtype=None, shape=None, magnitude=None):
  """Compares two arrays element by element.

  Element i passes when ``|got_i − want_i| ≤ atol + rtol·|want_i| + floor·max|want|``: each element is held
  to its own size, so a 1% error in a small element is seen, with a floor (``FLOOR_ULPS`` ulps of the
  dtype, relative to the largest value) for the rounding of a small element computed as a difference
  of large ones. NaN where ``want`` is NaN too is agreement; NaN or inf anywhere else an infinite error.
  With ``dtype`` and ``shape`` (the primal's), ``got`` must have exactly that dtype and shape.
  ``magnitude`` replaces ``|want_i|`` as each element's size (for a sum of terms that may cancel).
  """
  got_dtype = str(getattr(got, "dtype", np.asarray(got).dtype))
  expect_shape = np.shape(want) if shape is None else tuple(shape)
  if np.shape(got) != expect_shape:
    return Entry(check, label, got_dtype, np.inf, np.inf, tol[0], tol[1], False,
                 f"shape {np.shape(got)}, expected {expect_shape}")
  if dtype is not None and np.dtype(got_dtype) != np.dtype(dtype):
    return Entry(check, label, got_dtype, np.inf, np.inf, tol[0], tol[1], False,
                 f"dtype {got_dtype}, expected {np.dtype(dtype).name} (the primal's dtype)")
  if not np.size(got):
    return entry(check, label, got_dtype, 0.0, 0.0, tol)
  fl = floor(getattr(tol, "floor_dtype", None) or got_dtype, tol[0])
  if np.size(got) > LARGE:
    stats = jax.device_get(_device_stats(got, jnp.asarray(want, np.asarray(got).dtype), tol[0], tol[1], fl,
                                          magnitude))
  else:
    stats = _host_stats(got, want, tol[0], tol[1], fl, magnitude)
  abs_err, scale, excess, worst, g, w = (float(s) for s in stats)
  index = tuple(int(i) for i in np.unravel_index(int(worst), np.shape(got)))
  detail = f"largest error at index {index}: got {g:.6g}, expected {w:.6g}"
  return entry(check, label, got_dtype, abs_err, scale, tol, detail, excess <= 1.0)


def entry(check, label, dtype, abs_err, scale, tol, detail="", passed=None):
  """An ``Entry`` from an error and the scale it is measured against (``abs ≤ atol + rtol·scale``)."""
  rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else np.inf)
  if passed is None:
    passed = bool(abs_err <= tol[1] + tol[0] * scale)
  return Entry(check, label, dtype, float(abs_err), float(rel_err), tol[0], tol[1], bool(passed), detail)


def failed(check, label, detail):
  return Entry(check, label, "", np.inf, np.inf, 0.0, 0.0, False, detail)


def dot(a, b, mask_a=None):
  """``⟨a, b⟩`` over all leaves of two pytrees of arrays, in float64; NaN-free where ``mask_a`` is False."""
  total = 0.0
  for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
    if np.size(x) > LARGE:
      total += float(jnp.vdot(jnp.asarray(x).ravel(), jnp.asarray(y).ravel()))
      continue
    x, y = f64(x), f64(y)
    if mask_a is not None:
      keep = mask_a[i]
      x, y = np.where(keep, x, 0.0), np.where(keep, y, 0.0)
    total += float(np.vdot(x, y))
  return total


def norm(a, mask=None):
  return float(np.sqrt(dot(a, a, mask)))
