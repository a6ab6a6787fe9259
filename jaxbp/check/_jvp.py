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

from jaxbp.check._args import Args
from jaxbp.check._compare import FD_TOLERANCE
from jaxbp.check._compare import Report
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import dot
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import tolerance
from jaxbp.check._more import LINEAR_AB
from jaxbp.check._vjp import finish
from jaxbp.check._vjp import run_checks
from jaxbp.check._vjp import wants_x64

JVP_CHECKS = ("forward", "jvp", "finite_differences", "linearity", "jit", "vmap", "vjp")


class _JvpChecker:
  def __init__(self, fn, reference, spec, rtol, atol, fd_eps, rng):
    self.fn, self.ref, self.spec, self.rng = fn, reference, spec, rng
    self.rtol, self.atol, self.fd_eps = rtol, atol, fd_eps
    self.x = spec.x()
    if not self.x:
      raise ValueError("check_jvp: no differentiable inputs (no floating-point array among the args)")
    self.labels = [spec.labels[i] for i in spec.diff]
    self.out = jax.eval_shape(spec.bind(reference), *self.x)
    self.v = [self._draw(x) for x in self.x]
    self.skipped: list = []
    self.notes: list = []

  def _draw(self, like):
    work = np.float64 if np.dtype(like.dtype) == np.float64 else np.float32
    return jnp.asarray(self.rng.standard_normal(like.shape, dtype=work), like.dtype)

  def tol(self, dtype):
    return tolerance(dtype, self.rtol, self.atol)

  def _tangent(self, f, x, k, vk):
    """J·v with v nonzero on input k only."""
    return self.spec.jvp_of(f, x, k, vk)

  def _outputs(self, check, k, got, want):
    flat = jax.tree_util.tree_flatten_with_path(self.out)[0]
    return [array_entry(check, f"{self.labels[k]} → output{jax.tree_util.keystr(p)}", g, w,
                        self.tol(o.dtype), o.dtype, o.shape)
            for (p, o), g, w in zip(flat, jax.tree.leaves(got), jax.tree.leaves(want))]

  @functools.cached_property
  def manual(self):
    return [self._tangent(self.fn, self.x, k, v) for k, v in enumerate(self.v)]

  def forward(self):
    got, want = self.spec.bind(self.fn)(*self.x), self.spec.bind(self.ref)(*self.x)
    return [array_entry("forward", "output" + jax.tree_util.keystr(p), g, w, self.tol(w.dtype), w.dtype,
                        w.shape) for (p, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0],
                                                      jax.tree.leaves(got))]

  def jvp(self):
    want = [self._tangent(self.ref, self.x, k, v) for k, v in enumerate(self.v)]
    return [e for k in range(len(self.x)) for e in self._outputs("jvp", k, self.manual[k], want[k])]

  def finite_differences(self):
    out = []
    with jax.enable_x64(True):
      leaves = [f64(a) if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact) else a
                for a in self.spec.leaves]
      x = [jnp.asarray(leaves[i]) for i in self.spec.diff]
      f = jax.jit(self.spec.bind(self.fn, leaves))
      u = jax.tree.map(lambda o: self.rng.standard_normal(o.shape), self.out)
      for k in range(len(x)):
        v = f64(self.v[k]) / max(float(np.linalg.norm(f64(self.v[k]))), 1e-300)
        manual = dot(u, self._tangent(self.fn, x, k, jnp.asarray(v)))
        h = self.fd_eps * max(1.0, float(np.max(np.abs(f64(x[k])), initial=0.0)))
        plus, minus = f(*x[:k], x[k] + h * v, *x[k + 1:]), f(*x[:k], x[k] - h * v, *x[k + 1:])
        fd = dot(u, jax.tree.map(lambda p, m, h=h: (f64(p) - f64(m)) / (2 * h), plus, minus))
        size = jax.tree.map(lambda p, m: np.abs(f64(p)) + np.abs(f64(m)), plus, minus)
        noise = np.finfo(np.float64).eps * dot(jax.tree.map(np.abs, u), size) / (2 * h)
        err = abs(manual - fd) if np.isfinite(manual - fd) else np.inf
        out.append(entry("finite_differences", self.labels[k], "float64", err, max(abs(manual), abs(fd)),
                         (FD_TOLERANCE[0], FD_TOLERANCE[1] + noise),
                         f"⟨u, J·v⟩ = {manual:.8g} from the rule, {fd:.8g} from finite differences"))
    return out

  def linearity(self):
    a, b = LINEAR_AB
    f = jax.jit(self._tangent, static_argnums=(0, 2))
    out = []
    for k, x in enumerate(self.x):
      w = self._draw(x)
      tv, tw = f(self.fn, self.x, k, self.v[k]), f(self.fn, self.x, k, w)
      mix = f(self.fn, self.x, k, (a * f64(self.v[k]) + b * f64(w)).astype(x.dtype))
      zero = f(self.fn, self.x, k, jnp.zeros_like(x))
      for e, z in zip(self._outputs("linearity", k, mix, jax.tree.map(
          lambda p, q: a * f64(p) + b * f64(q), tv, tw)), jax.tree.leaves(zero)):
        if e.passed and np.any(f64(z) != 0):
          e = entry("linearity", e.input, e.dtype, float(np.max(np.abs(f64(z)))), 0.0, (e.rtol, e.atol),
                    "the tangent of a zero input tangent is not zero", False)
        out.append(e)
    return out

  def jit(self):
    f = jax.jit(self._tangent, static_argnums=(0, 2))
    return [e for k, v in enumerate(self.v) for e in self._outputs("jit", k, f(self.fn, self.x, k, v),
                                                                  self.manual[k])]

  def vmap(self):
    out = []
    for k, v in enumerate(self.v):
      v1 = self._draw(self.x[k])
      got = jax.vmap(lambda t, k=k: self._tangent(self.fn, self.x, k, t))(jnp.stack([v, v1]))
      want = jax.tree.map(lambda a, b: np.stack([f64(a), f64(b)]), self.manual[k],
                          self._tangent(self.fn, self.x, k, v1))
      flat = jax.tree_util.tree_flatten_with_path(self.out)[0]
      out += [array_entry("vmap", f"{self.labels[k]} → output{jax.tree_util.keystr(p)}", g, w,
                          self.tol(o.dtype), o.dtype, (2,) + tuple(o.shape))
              for (p, o), g, w in zip(flat, jax.tree.leaves(got), jax.tree.leaves(want))]
    return out

  def vjp(self):
    u = jax.tree.map(self._draw, self.out)
    got = jax.vjp(self.spec.bind(self.fn), *self.x)[1](u)
    want = jax.vjp(self.spec.bind(self.ref), *self.x)[1](u)
    return [array_entry("vjp", label, g, w, self.tol(x.dtype), x.dtype, x.shape)
            for label, x, g, w in zip(self.labels, self.x, got, want)]


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
    spec = Args(fn, args, kwargs or {}, argnums)
    checker = _JvpChecker(fn, reference, spec, rtol, atol, fd_eps, np.random.default_rng(seed))
    entries, cause, _ = run_checks(checker, names, fn, spec)
  name = f"{getattr(fn, '__name__', repr(fn))} vs {getattr(reference, '__name__', repr(reference))}"
  return finish(Report(name, tuple(entries), tuple(checker.skipped), tuple(checker.notes), "check_jvp"),
                cause)
