"""``check_jvp``: proves a hand-written JVP rule (a ``jax.custom_jvp``) against a plain reference.

The checks, per differentiable input (the same discipline as ``check_vjp``):

* ``forward``: ``fn(*args)`` equals ``reference(*args)``.
* ``jvp``: the tangent ``J·v`` of ``jax.jvp(fn)`` equals the reference's, element by element, with the
  output's exact dtype and shape, for a random tangent ``v`` of that input alone.
* ``finite_differences``: ``⟨u, J·v⟩`` against ``⟨u, (f(x + εv) − f(x − εv)) / 2ε⟩`` of ``fn`` in float64.
* ``linearity``: ``J·(a·v + b·w) = a·J·v + b·J·w``, and ``J·0`` exactly 0.
* ``jit``, ``vmap``: the JVP under ``jax.jit``, and ``jax.vmap``-ed over two copies, equals the eager one.
* ``vjp`` (JAX transposes a ``custom_jvp``'s linear tangent rule): ``jax.vjp(fn)`` equals the reference's.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check import _truth
from jaxbp.check._args import Args
from jaxbp.check._classic import forward
from jaxbp.check._compare import FD_TOLERANCE
from jaxbp.check._compare import Entry
from jaxbp.check._compare import Report
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import dot
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._measure import LINEAR_AB
from jaxbp.check._measure import Inputs
from jaxbp.check._table import Check
from jaxbp.check._table import finish
from jaxbp.check._table import name_of
from jaxbp.check._table import run_checks
from jaxbp.check._table import wants_x64


class JvpMeasured(Inputs):
  """What ``check_jvp``'s checks compare with: a random tangent per input and the rule's J·v of it."""

  def __init__(self, fn, reference, spec, rtol, atol, fd_eps, rng):
    super().__init__(fn, reference, spec, rng, rtol, atol, kind="check_jvp")
    self.fd_eps = fd_eps
    self.v = [self.draw(x) for x in self.x]

  def tangent(self, f, x, k, vk):
    """J·v with v nonzero on input k only."""
    return self.spec.jvp_of(f, x, k, vk)

  def output_labels(self, k) -> list[str]:
    return [f"{self.labels[k]} → output{jax.tree_util.keystr(p)}"
            for p, _ in jax.tree_util.tree_flatten_with_path(self.out)[0]]

  def outputs(self, check, k, got, want) -> list[Entry]:
    return [array_entry(check, label, g, w, self.tol(o.dtype), o.dtype, o.shape) for label, o, g, w in
            zip(self.output_labels(k), jax.tree.leaves(self.out), jax.tree.leaves(got), jax.tree.leaves(want))]

  @functools.cached_property
  def manual(self):
    return [self.tangent(self.fn, self.x, k, v) for k, v in enumerate(self.v)]

  @functools.cached_property
  def ref_out(self):
    return self.spec.bind(self.ref)(*self.x)

  def primals(self):
    """The rule's output from a plain call and the primal ``jax.jvp`` returns with it."""
    bound = self.spec.bind(self.fn)
    return [("", bound(*self.x)), (" (jax.jvp)", jax.jvp(bound, tuple(self.x), tuple(self.v))[0])]


def _jvp(m):
  want = [m.tangent(m.ref, m.x, k, v) for k, v in enumerate(m.v)]
  if not _truth.narrow(m):
    return [e for k in range(len(m.x)) for e in m.outputs("jvp", k, m.manual[k], want[k])]
  truth = _truth.truth(m, "jvp", lambda: [  # bfloat16 or float16: J·v of the float64 truth
      m.spec.jvp_of(m.ref, _truth.up(m, m.x), k, _truth.up(m, v), _truth.up(m, m.spec.leaves))
      for k, v in enumerate(m.v)])
  return [e for k in range(len(m.x)) for e in _truth.entries(
      "jvp", m, m.output_labels(k), jax.tree.leaves(m.manual[k]), jax.tree.leaves(truth[k]),
      jax.tree.leaves(m.out), jax.tree.leaves(want[k]))]


def _finite_differences(m):
  out = []
  with jax.enable_x64(True):
    leaves = [f64(a) if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact) else a
              for a in m.spec.leaves]
    x = [jnp.asarray(leaves[i]) for i in m.spec.diff]
    f = jax.jit(m.spec.bind(m.fn, leaves))
    u = jax.tree.map(lambda o: m.rng.standard_normal(o.shape), m.out)
    for k in range(len(x)):
      v = f64(m.v[k]) / max(float(np.linalg.norm(f64(m.v[k]))), 1e-300)
      manual = dot(u, m.tangent(m.fn, x, k, jnp.asarray(v)))
      h = m.fd_eps * max(1.0, float(np.max(np.abs(f64(x[k])), initial=0.0)))
      plus, minus = f(*x[:k], x[k] + h * v, *x[k + 1:]), f(*x[:k], x[k] - h * v, *x[k + 1:])
      fd = dot(u, jax.tree.map(lambda p, q, h=h: (f64(p) - f64(q)) / (2 * h), plus, minus))
      size = jax.tree.map(lambda p, q: np.abs(f64(p)) + np.abs(f64(q)), plus, minus)
      noise = np.finfo(np.float64).eps * dot(jax.tree.map(np.abs, u), size) / (2 * h)
      err = abs(manual - fd) if np.isfinite(manual - fd) else np.inf
      out.append(entry("finite_differences", m.labels[k], "float64", err, max(abs(manual), abs(fd)),
                       (FD_TOLERANCE[0], FD_TOLERANCE[1] + noise),
                       f"⟨u, J·v⟩ = {manual:.8g} from the rule, {fd:.8g} from finite differences"))
  return out


def _linearity(m):
  a, b = LINEAR_AB
  f = jax.jit(m.tangent, static_argnums=(0, 2))
  out = []
  for k, x in enumerate(m.x):
    w = m.draw(x)
    tv, tw = f(m.fn, m.x, k, m.v[k]), f(m.fn, m.x, k, w)
    mix = f(m.fn, m.x, k, (a * f64(m.v[k]) + b * f64(w)).astype(x.dtype))
    zero = f(m.fn, m.x, k, jnp.zeros_like(x))
    for e, z in zip(m.outputs("linearity", k, mix, jax.tree.map(
        lambda p, q: a * f64(p) + b * f64(q), tv, tw)), jax.tree.leaves(zero)):
      if e.passed and np.any(f64(z) != 0):
        e = entry("linearity", e.input, e.dtype, float(np.max(np.abs(f64(z)))), 0.0, (e.rtol, e.atol),
                  "the tangent of a zero input tangent is not zero", False)
      out.append(e)
  return out


def _jit(m):
  f = jax.jit(m.tangent, static_argnums=(0, 2))
  return [e for k, v in enumerate(m.v) for e in m.outputs("jit", k, f(m.fn, m.x, k, v), m.manual[k])]


def _vmap(m):
  out = []
  for k, v in enumerate(m.v):
    v1 = m.draw(m.x[k])
    got = jax.vmap(lambda t, k=k: m.tangent(m.fn, m.x, k, t))(jnp.stack([v, v1]))
    want = jax.tree.map(lambda a, b: np.stack([f64(a), f64(b)]), m.manual[k], m.tangent(m.fn, m.x, k, v1))
    flat = jax.tree_util.tree_flatten_with_path(m.out)[0]
    out += [array_entry("vmap", f"{m.labels[k]} → output{jax.tree_util.keystr(p)}", g, w,
                        m.tol(o.dtype), o.dtype, (2,) + tuple(o.shape))
            for (p, o), g, w in zip(flat, jax.tree.leaves(got), jax.tree.leaves(want))]
  return out


def _vjp(m):
  u = jax.tree.map(m.draw, m.out)
  got = jax.vjp(m.spec.bind(m.fn), *m.x)[1](u)
  want = jax.vjp(m.spec.bind(m.ref), *m.x)[1](u)
  if _truth.narrow(m):  # bfloat16 or float16: against the float64 truth's VJP
    truth = _truth.truth(m, "vjp", lambda: jax.vjp(_truth.wide_reference(m), *_truth.up(m, m.x))[1](
        _truth.up(m, u)))
    return _truth.entries("vjp", m, m.labels, got, truth, m.x, want)
  return [array_entry("vjp", label, g, w, m.tol(x.dtype), x.dtype, x.shape)
          for label, x, g, w in zip(m.labels, m.x, got, want)]


TABLE = {"forward": Check(forward), "jvp": Check(_jvp), "finite_differences": Check(_finite_differences),
         "linearity": Check(_linearity), "jit": Check(_jit), "vmap": Check(_vmap), "vjp": Check(_vjp)}
JVP_CHECKS = tuple(TABLE)


def check_jvp(fn: Callable, reference: Callable, *args: Any, kwargs: dict | None = None,
              argnums: int | Sequence[int] | None = None, checks: Sequence[str] | None = None,
              rtol: float | None = None, atol: float | None = None, fd_eps: float = 1e-5,
              seed: int = 0) -> Report:
  """Proves ``fn``'s JVP rule (a ``jax.custom_jvp``, or built from them) against ``reference``.

  Arguments as ``check_vjp``'s; ``checks`` is a subset of ``JVP_CHECKS`` (default: all). Returns the
  ``Report``; raises ``AssertionError`` with the report when a check fails, ``ValueError`` for an
  unknown check or nothing to differentiate.
  """
  names = JVP_CHECKS if checks is None else tuple(checks)
  unknown = set(names) - set(JVP_CHECKS)
  if unknown:
    raise ValueError(f"check_jvp: unknown checks {sorted(unknown)}; choose from {JVP_CHECKS}")
  argnums = (argnums,) if isinstance(argnums, int) else argnums
  with jax.enable_x64(wants_x64(args)):
    m = JvpMeasured(fn, reference, Args(fn, args, kwargs or {}, argnums), rtol, atol, fd_eps,
                    np.random.default_rng(seed))
    entries, cause = run_checks(TABLE, names, m)
  return finish(Report(name_of(fn, reference), tuple(entries), tuple(m.skipped), tuple(m.notes), "check_jvp"),
                cause)
