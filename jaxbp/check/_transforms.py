"""The ``transforms`` check: the rule's VJP under every transform (vmap per argument, batch 1, the last
axis, checkpoint, scan, second order both ways) and forward mode, each a named function in ``TRANSFORMS``."""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxbp.check._classic import per_input
from jaxbp.check._compare import Entry
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import failed


def _stack(trees, axis=0):
  return jax.tree.map(lambda *a: jnp.stack(a, axis=axis), *trees)


def _batched(m, name, f, xs, us, n):
  """``f(xs, us)`` against the rule's eager VJP of each of the ``n`` copies, for every input."""
  want = [m.vjp(m.fn, [a[j] if a.ndim > x.ndim else a for a, x in zip(xs, m.x)],
                jax.tree.map(lambda a, j=j: a[j], us)) for j in range(n)]
  got = f(xs, us)
  return [array_entry(name, label, g, np.stack([f64(w[k]) for w in want]), m.tol(x.dtype), x.dtype,
                      (n,) + x.shape) for k, (label, x, g) in enumerate(zip(m.labels, m.x, got))]


def _copies(m, n):
  xs = [[m.draw(x, base=x, spread=0.05) for x in m.x] for _ in range(n)]
  return xs, [jax.tree.map(m.draw, m.u) for _ in range(n)]


def vmap_each(m):
  """vmap over one input alone (the others shared), for each input; the cotangent batched."""
  out, (xs, us) = [], _copies(m, 2)
  for k in range(len(m.x)):
    stacked = [jnp.stack([c[k] for c in xs]) if j == k else x for j, x in enumerate(m.x)]
    axes = [0 if j == k else None for j in range(len(m.x))]
    f = jax.jit(jax.vmap(functools.partial(m.vjp, m.fn), in_axes=(axes, 0)))
    out.append(_batched(m, "vmap_each", f, stacked, _stack(us), 2)[k])  # the shared inputs' are summed
  return out


def vmap_batch1(m):
  xs, us = _copies(m, 1)
  f = jax.jit(jax.vmap(functools.partial(m.vjp, m.fn)))
  return _batched(m, "vmap_batch1", f, [x[None] for x in xs[0]], jax.tree.map(lambda a: a[None], us[0]), 1)


def vmap_last_axis(m):
  xs, us = _copies(m, 2)
  f = jax.jit(jax.vmap(functools.partial(m.vjp, m.fn), in_axes=-1, out_axes=0))
  last = lambda a, b: f([jnp.moveaxis(x, 0, -1) for x in a], jax.tree.map(lambda t: jnp.moveaxis(t, 0, -1), b))
  return _batched(m, "vmap_last_axis", last, _stack(xs), _stack(us), 2)


def checkpoint(m):
  got = jax.jit(lambda x, u: jax.vjp(jax.checkpoint(m.spec.bind(m.fn)), *x)[1](u))(m.x, m.u)
  return per_input(m, "checkpoint", got, m.manual)


def scan(m):
  xs, us = _copies(m, 2)
  bound = m.spec.bind(m.fn)

  def scanned(x):
    return lax.scan(lambda c, xt: (c, bound(*xt)), 0.0, x)[1]
  f = jax.jit(lambda x, u: jax.vjp(scanned, x)[1](u)[0])
  return _batched(m, "scan", f, _stack(xs), _stack(us), 2)


def rev_over_rev(m):
  return per_input(m, "rev_over_rev", *m.hvps)


def _fwd_over_rev(m, f):
  return jax.jit(lambda x, v: jax.jvp(lambda *y: m.vjp(f, y, m.u), tuple(x), tuple(v))[1])(m.x, m.v)


def fwd_over_rev(m):
  return per_input(m, "fwd_over_rev", _fwd_over_rev(m, m.fn), _fwd_over_rev(m, m.ref))


def jvp(m):
  """Forward mode through the rule itself: JAX refuses it for a custom_vjp, which is reported."""
  bound = m.spec.bind(m.fn)
  try:
    got = jax.jvp(bound, tuple(m.x), tuple(m.v))[1]
  except TypeError as exc:
    if "custom_vjp" not in str(exc):
      raise
    m.skipped.append(("jvp", "the rule", "forward mode over a custom_vjp is unsupported by JAX"))
    return []
  want = jax.jvp(m.spec.bind(m.ref), tuple(m.x), tuple(m.v))[1]
  return [array_entry("jvp", "output" + jax.tree_util.keystr(p), g, w, m.tol(w.dtype), w.dtype, w.shape)
          for (p, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got))]


TRANSFORMS = {"vmap_each": vmap_each, "vmap_batch1": vmap_batch1, "vmap_last_axis": vmap_last_axis,
              "checkpoint": checkpoint, "scan": scan, "rev_over_rev": rev_over_rev,
              "fwd_over_rev": fwd_over_rev, "jvp": jvp}


def transforms(m) -> list[Entry]:
  out = []
  for name, run in TRANSFORMS.items():
    try:
      out += run(m)
    except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
      first = (str(exc).strip().splitlines() or [""])[0]
      out.append(failed(name, "the rule", f"raised {type(exc).__name__}: {first[:300]}"))
  return out
