"""The checks no other gradient checker makes: linearity, cotangent discipline, determinism, residuals,
and the rule under every transform (vmap per argument, batch 1, checkpoint, scan, second order)."""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxbp.check._compare import array_entry
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import failed
from jaxbp.check._core import Checker
from jaxbp.check._core import _nbytes

TRANSFORMS = ("vmap_each", "vmap_batch1", "vmap_last_axis", "checkpoint", "scan", "rev_over_rev",
              "fwd_over_rev", "jvp")
# a, b of the linearity check: neither 1 nor 0 and a + b ≠ 1, so a constant term or sign(g) shows
LINEAR_AB = (0.75, -1.5)


def _stack(trees, axis=0):
  return jax.tree.map(lambda *a: jnp.stack(a, axis=axis), *trees)


class MoreChecks(Checker):
  """The checks beyond the classic ones, on a ``Checker``'s inputs and cotangents."""

  # --- linearity: bwd(a·u + b·w) = a·bwd(u) + b·bwd(w) ---

  @functools.cached_property
  def lin_data(self):
    a, b = LINEAR_AB
    w = jax.tree.map(self._draw, self.u)
    mix = jax.tree.map(lambda p, q: (a * f64(p) + b * f64(q)).astype(p.dtype), self.u, w)
    zero = jax.tree.map(jnp.zeros_like, self.u)
    return (self.manual_jit(self.x, self.u), self.manual_jit(self.x, w), self.manual_jit(self.x, mix),
            self.manual_jit(self.x, zero))

  def linearity(self):
    return self.compare_linearity(*self.lin_data)

  def compare_linearity(self, cu, cw, cmix, czero):
    """The mix within tolerance, and bwd(0) exactly 0 (a linear map in floating point gives 0·anything)."""
    a, b = LINEAR_AB
    out = []
    for k, (label, x, p, q, m, z) in enumerate(zip(self.labels, self.x, cu, cw, cmix, czero)):
      want = a * f64(p) + b * f64(q)
      e = array_entry("linearity", label, m, want, self.tol(x.dtype), x.dtype, x.shape,
                      magnitude=abs(a) * np.abs(f64(p)) + abs(b) * np.abs(f64(q)))
      z = np.where(self.masks[1][k], f64(z), 0.0)
      if e.passed and np.any(z != 0):
        worst = float(np.max(np.abs(np.nan_to_num(z, nan=np.inf))))
        e = entry("linearity", label, e.dtype, worst, 0.0, (e.rtol, e.atol),
                  f"the backward of a zero cotangent is not zero: up to {worst:.3g}", False)
      out.append(e)
    return out

  # --- cotangent discipline: every array input, float or not, gets a cotangent of its exact type ---

  def cotangents(self):
    idx = self.spec.arrays
    bound = self.spec.bind(self.fn, which=idx)
    prim = [self.spec.leaves[i] for i in idx]
    cts = jax.eval_shape(lambda *a: jax.vjp(bound, *a)[1](self.u), *prim)
    out = []
    for i, p, c in zip(idx, prim, cts):
      exact = jnp.issubdtype(p.dtype, jnp.inexact)
      want = np.dtype(p.dtype) if exact else np.dtype(jax.dtypes.float0)
      ok = c.shape == np.shape(p) and np.dtype(c.dtype) == want
      detail = (f"cotangent {np.dtype(c.dtype).name}{list(c.shape)}, expected {want.name}{list(np.shape(p))}"
                + ("" if exact else " (float0: an integer, boolean or key input has no gradient)"))
      out.append(entry("cotangents", self.spec.labels[i], str(np.dtype(c.dtype)), 0.0 if ok else np.inf,
                       1.0, (0.0, 0.0), "" if ok else detail, ok))
    return self._raw_bwd(out)

  def _raw_bwd(self, out):
    """What a ``custom_vjp``'s bwd itself returns, before JAX casts it: a float for an integer input fails."""
    fn = self.fn
    if not isinstance(fn, jax.custom_vjp) or self.spec.kwargs or not hasattr(fn, "bwd"):
      return out
    args = jax.tree.unflatten(self.spec.treedef, self.spec.leaves)
    nondiff = tuple(fn.nondiff_argnums)
    res = fn.fwd(*args)[1]  # type: ignore[misc]
    cts = fn.bwd(*[args[i] for i in nondiff], res, self.u)  # type: ignore[misc]
    primals = [a for i, a in enumerate(args) if i not in nondiff]
    by_label = {e.input: n for n, e in enumerate(out)}
    for arg, ct in zip(primals, cts):
      if ct is None:
        continue
      for p, c in zip(jax.tree.leaves(arg), jax.tree.leaves(ct, is_leaf=lambda a: a is None)):
        if not hasattr(p, "dtype") or jnp.issubdtype(p.dtype, jnp.inexact) or c is None:
          continue
        if np.dtype(getattr(c, "dtype", np.float64)) != np.dtype(jax.dtypes.float0):
          label = self.spec.labels[[j for j, x in enumerate(self.spec.leaves) if x is p][0]]
          bad = entry("cotangents", label, str(np.dtype(c.dtype)), np.inf, 1.0, (0.0, 0.0),
                      f"the bwd returns {np.dtype(c.dtype).name}{list(np.shape(c))} for an input of dtype"
                      f" {np.dtype(p.dtype).name}: return None (JAX drops it silently)", False)
          out[by_label[label]] = bad
    return out

  # --- determinism: the compiled backward run twice gives the same bits ---

  def determinism(self):
    first, second = self.lin_data[0], self.manual_jit(self.x, self.u)
    out = []
    for label, x, p, q in zip(self.labels, self.x, first, second):
      p, q = np.asarray(p), np.asarray(q)
      same = np.array_equal(p, q, equal_nan=True)
      err = 0.0 if same else float(np.nanmax(np.abs(f64(p) - f64(q)), initial=0.0)) or np.inf
      tol = (0.0, self.opts.nondet_tol)
      out.append(entry("determinism", label, str(x.dtype), err, 1.0, tol,
                       "two runs of the same compiled backward differ", same or err <= tol[1]))
    return out

  # --- the residual audit: what the forward keeps for the backward ---

  def residual_bytes(self, f):
    pull = jax.eval_shape(lambda *x: jax.vjp(self.spec.bind(f), *x)[1], *self.x)
    leaves = [a for a in jax.tree.leaves(pull) if hasattr(a, "dtype")]
    return len(leaves), _nbytes(leaves)

  def residuals(self):
    """A note, not a check: the bytes the rule's forward saves against autodiff of the reference."""
    (n_rule, rule), (n_ref, ref) = self.residual_bytes(self.fn), self.residual_bytes(self.ref)
    ratio = f" ({rule / ref:.2f}× autodiff's)" if ref else ""
    self.notes.append(f"residuals: the rule's forward saves {rule:,} bytes in {n_rule} arrays{ratio};"
                      f" autodiff of the reference saves {ref:,} bytes in {n_ref} arrays")
    return []

  # --- the transform matrix ---

  def transforms(self):
    out = []
    for name in TRANSFORMS:
      try:
        out += getattr(self, "_t_" + name)()
      except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
        first = (str(exc).strip().splitlines() or [""])[0]
        out.append(failed(name, "the rule", f"raised {type(exc).__name__}: {first[:300]}"))
    return out

  def _batched(self, name, f, xs, us, n):
    """``f(xs, us)`` against the rule's eager VJP of each of the ``n`` copies, for every input."""
    want = [self._vjp(self.fn, [a[j] if a.ndim > x.ndim else a for a, x in zip(xs, self.x)],
                      jax.tree.map(lambda a, j=j: a[j], us)) for j in range(n)]
    got = f(xs, us)
    return [array_entry(name, label, g, np.stack([f64(w[k]) for w in want]), self.tol(x.dtype), x.dtype,
                        (n,) + x.shape) for k, (label, x, g) in enumerate(zip(self.labels, self.x, got))]

  def _copies(self, n):
    xs = [[self._draw(x, base=x, spread=0.05) for x in self.x] for _ in range(n)]
    return xs, [jax.tree.map(self._draw, self.u) for _ in range(n)]

  def _t_vmap_each(self):
    """vmap over one input alone (the others shared), for each input; the cotangent batched."""
    out, (xs, us) = [], self._copies(2)
    for k in range(len(self.x)):
      stacked = [jnp.stack([c[k] for c in xs]) if j == k else x for j, x in enumerate(self.x)]
      axes = [0 if j == k else None for j in range(len(self.x))]
      f = jax.jit(jax.vmap(functools.partial(self._vjp, self.fn), in_axes=(axes, 0)))
      got = self._batched("vmap_each", f, stacked, _stack(us), 2)
      out.append(got[k])  # the shared inputs' cotangents are summed over the batch: compared below
    return out

  def _t_vmap_batch1(self):
    xs, us = self._copies(1)
    f = jax.jit(jax.vmap(functools.partial(self._vjp, self.fn)))
    return self._batched("vmap_batch1", f, [x[None] for x in xs[0]], jax.tree.map(lambda a: a[None], us[0]), 1)

  def _t_vmap_last_axis(self):
    xs, us = self._copies(2)
    f = jax.jit(jax.vmap(functools.partial(self._vjp, self.fn), in_axes=-1, out_axes=0))
    entries = self._batched("vmap_last_axis", lambda a, b: f([jnp.moveaxis(x, 0, -1) for x in a],
                                                              jax.tree.map(lambda t: jnp.moveaxis(t, 0, -1), b)),
                            _stack(xs), _stack(us), 2)
    return entries

  def _t_checkpoint(self):
    got = jax.jit(lambda x, u: jax.vjp(jax.checkpoint(self.spec.bind(self.fn)), *x)[1](u))(self.x, self.u)
    return self.per_input("checkpoint", got, self.manual)

  def _t_scan(self):
    xs, us = self._copies(2)
    bound = self.spec.bind(self.fn)

    def scanned(x):
      return lax.scan(lambda c, xt: (c, bound(*xt)), 0.0, x)[1]
    f = jax.jit(lambda x, u: jax.vjp(scanned, x)[1](u)[0])
    return self._batched("scan", f, _stack(xs), _stack(us), 2)

  def _t_rev_over_rev(self):
    return self.per_input("rev_over_rev", *self.hvps)

  def _fwd_over_rev(self, f):
    return jax.jit(lambda x, v: jax.jvp(lambda *y: self._vjp(f, y, self.u), tuple(x), tuple(v))[1])(
        self.x, self.v)

  def _t_fwd_over_rev(self):
    return self.per_input("fwd_over_rev", self._fwd_over_rev(self.fn), self._fwd_over_rev(self.ref))

  def _t_jvp(self):
    """Forward mode through the rule itself: JAX refuses it for a custom_vjp, which is reported."""
    bound = self.spec.bind(self.fn)
    try:
      got = jax.jvp(bound, tuple(self.x), tuple(self.v))[1]
    except TypeError as exc:
      if "custom_vjp" not in str(exc):
        raise
      self.skipped.append(("jvp", "the rule", "forward mode over a custom_vjp is unsupported by JAX"))
      return []
    want = jax.jvp(self.spec.bind(self.ref), tuple(self.x), tuple(self.v))[1]
    return [array_entry("jvp", "output" + jax.tree_util.keystr(p), g, w, self.tol(w.dtype), w.dtype, w.shape)
            for (p, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got))]

