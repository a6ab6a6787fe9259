"""The cheap checks beyond the classic ones, run by default: linearity, cotangent discipline,
determinism and the residual audit. Each shares the classic checks' compiled backward or only traces."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check._compare import Entry
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._measure import LINEAR_AB
from jaxbp.check._measure import nbytes

# --- linearity: bwd(a·u + b·w) = a·bwd(u) + b·bwd(w) ---


def linearity(m) -> list[Entry]:
  return compare_linearity(m, *m.lin_data)


def compare_linearity(m, cu, cw, cmix, czero) -> list[Entry]:
  """The mix within tolerance, and bwd(0) exactly 0 (a linear map in floating point gives 0·anything).

  For large inputs the expected mix is formed on the device, in the cotangent's dtype (at least float32):
  its rounding is far below the tolerance, and no float64 copy of a large array reaches the host."""
  a, b = LINEAR_AB
  out = []
  for k, (label, x, p, q, mix, z) in enumerate(zip(m.labels, m.x, cu, cw, cmix, czero)):
    if m.large:
      work = jnp.promote_types(p.dtype, jnp.float32)
      p, q = jnp.asarray(p, work), jnp.asarray(q, work)
      want, size = a * p + b * q, abs(a) * jnp.abs(p) + abs(b) * jnp.abs(q)
      z = jnp.where(m.masks[1][k], z, 0)
      nonzero = bool(jnp.any(z != 0))
      worst = float(jnp.max(jnp.abs(jnp.nan_to_num(z.astype(work), nan=jnp.inf)))) if nonzero else 0.0
    else:
      want, size = a * f64(p) + b * f64(q), abs(a) * np.abs(f64(p)) + abs(b) * np.abs(f64(q))
      z = np.where(m.masks[1][k], f64(z), 0.0)
      nonzero = bool(np.any(z != 0))
      worst = float(np.max(np.abs(np.nan_to_num(z, nan=np.inf)))) if nonzero else 0.0
    e = array_entry("linearity", label, mix, want, m.tol(x.dtype), x.dtype, x.shape, magnitude=size)
    if e.passed and nonzero:
      e = entry("linearity", label, e.dtype, worst, 0.0, (e.rtol, e.atol),
                f"the backward of a zero cotangent is not zero: up to {worst:.3g}", False)
    out.append(e)
  return out


# --- cotangent discipline: every array input, float or not, gets a cotangent of its exact type ---

def cotangents(m) -> list[Entry]:
  idx = m.spec.arrays
  bound = m.spec.bind(m.fn, which=idx)
  prim = [m.spec.leaves[i] for i in idx]
  cts = jax.eval_shape(lambda *a: jax.vjp(bound, *a)[1](m.u), *prim)
  out = []
  for i, p, c in zip(idx, prim, cts):
    exact = jnp.issubdtype(p.dtype, jnp.inexact)
    want = np.dtype(p.dtype) if exact else np.dtype(jax.dtypes.float0)
    ok = c.shape == np.shape(p) and np.dtype(c.dtype) == want
    detail = (f"cotangent {np.dtype(c.dtype).name}{list(c.shape)}, expected {want.name}{list(np.shape(p))}"
              + ("" if exact else " (float0: an integer, boolean or key input has no gradient)"))
    out.append(entry("cotangents", m.spec.labels[i], str(np.dtype(c.dtype)), 0.0 if ok else np.inf,
                     1.0, (0.0, 0.0), "" if ok else detail, ok))
  return _raw_bwd(m, out)


def _raw_bwd(m, out):
  """What a ``custom_vjp``'s bwd itself returns, before JAX casts it: a float for an integer input fails."""
  fn = m.fn
  if not isinstance(fn, jax.custom_vjp) or m.spec.kwargs or not hasattr(fn, "bwd"):
    return out
  args = jax.tree.unflatten(m.spec.treedef, m.spec.leaves)
  nondiff = tuple(fn.nondiff_argnums)

  def raw(*a):  # traced, not run: only the types of what the bwd returns are read
    return fn.bwd(*[a[i] for i in nondiff], fn.fwd(*a)[1], m.u)  # type: ignore[misc]
  cts = jax.eval_shape(m.spec.bind(raw, which=m.spec.arrays), *[m.spec.leaves[i] for i in m.spec.arrays])
  primals = [a for i, a in enumerate(args) if i not in nondiff]
  by_label = {e.input: n for n, e in enumerate(out)}
  for arg, ct in zip(primals, cts):
    if ct is None:
      continue
    for p, c in zip(jax.tree.leaves(arg), jax.tree.leaves(ct, is_leaf=lambda a: a is None)):
      if not hasattr(p, "dtype") or jnp.issubdtype(p.dtype, jnp.inexact) or c is None:
        continue
      if np.dtype(getattr(c, "dtype", np.float64)) != np.dtype(jax.dtypes.float0):
        label = m.spec.labels[[j for j, x in enumerate(m.spec.leaves) if x is p][0]]
        out[by_label[label]] = entry(
            "cotangents", label, str(np.dtype(c.dtype)), np.inf, 1.0, (0.0, 0.0),
            f"the bwd returns {np.dtype(c.dtype).name}{list(np.shape(c))} for an input of dtype"
            f" {np.dtype(p.dtype).name}: return None (JAX drops it silently)", False)
  return out


# --- determinism: the compiled backward run twice gives the same bits ---

def determinism(m) -> list[Entry]:
  first, second = m.lin_data[0], m.manual_jit(m.x, m.u)
  out = []
  for label, x, p, q in zip(m.labels, m.x, first, second):
    p, q = np.asarray(p), np.asarray(q)
    same = np.array_equal(p, q, equal_nan=True)
    err = 0.0 if same else float(np.nanmax(np.abs(f64(p) - f64(q)), initial=0.0)) or np.inf
    tol = (0.0, m.opts.nondet_tol)
    out.append(entry("determinism", label, str(x.dtype), err, 1.0, tol,
                     "two runs of the same compiled backward differ", same or err <= tol[1]))
  return out


# --- the residual audit: what the forward keeps for the backward ---

def _residual_bytes(m, f):
  pull = jax.eval_shape(lambda *x: jax.vjp(m.spec.bind(f), *x)[1], *m.x)
  leaves = [a for a in jax.tree.leaves(pull) if hasattr(a, "dtype")]
  return len(leaves), nbytes(leaves)


def residuals(m) -> list[Entry]:
  """A note, not a check: the bytes the rule's forward saves against autodiff of the reference."""
  (n_rule, rule), (n_ref, ref) = _residual_bytes(m, m.fn), _residual_bytes(m, m.ref)
  ratio = f" ({rule / ref:.2f}× autodiff's)" if ref else ""
  m.notes.append(f"residuals: the rule's forward saves {rule:,} bytes in {n_rule} arrays{ratio};"
                 f" autodiff of the reference saves {ref:,} bytes in {n_ref} arrays")
  return []
