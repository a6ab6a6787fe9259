"""``check_vjp``: proves a VJP rule against a plain reference, eight checks.

``check_vjp(fn, reference, *args)`` takes a function whose gradient is hand-written (a ``jax.custom_vjp``,
or anything built from them) and a ``reference`` with the same signature that JAX differentiates on its own,
and runs these checks on every differentiable input (every floating-point array leaf of the ``args``
pytrees; integer arrays, PRNG keys and Python scalars are passed through unchanged):

* ``forward``: ``fn(*args)`` equals ``reference(*args)``, leaf by leaf.
* ``vjp``: the manual ``Jᵀ·u = jax.vjp(fn)(u)`` equals ``jax.vjp(reference)(u)`` for a random cotangent ``u``.
* ``finite_differences``: in float64 whatever the inputs' dtype (x64 is switched on for the check and
  restored), ``⟨Jᵀ·u, v⟩`` from the manual rule equals ``⟨u, (f(x + εv) − f(x − εv)) / 2ε⟩`` of ``fn``
  itself (jitted), for a few random unit directions ``v`` per input: no autodiff at all on the right-hand
  side, and only ``2·directions`` forward calls per input, so it scales to large inputs.
* ``jacobian``: the notes' matrix form. The explicit Jacobian ``J`` of the reference by ``jax.jacfwd``
  (forward mode, independent of any reverse-mode rule), contracted with ``u``, equals the manual ``Jᵀ·u``.
  Skipped, and reported as skipped, when ``J`` has more than ``jacobian_max_size`` entries.
* ``transpose``: ``⟨u, J·v⟩`` with ``J·v`` from ``jax.jvp`` of the reference equals ``⟨Jᵀ·u, v⟩``.
* ``jit``: the manual VJP under ``jax.jit`` equals the eager one.
* ``vmap``: the manual VJP ``jax.vmap``-ed over two stacked copies of the inputs (the second one perturbed)
  and of the cotangent equals the VJP of each copy on its own.
* ``second_order`` (only when asked for): the Hessian-vector product ``∇ₓ⟨∇ₓ⟨u, f⟩, v⟩`` through the manual
  rule equals the reference's; it fails when the backward is not itself differentiable.

Why this is stronger than ``jax.test_util.check_grads``: ``check_grads`` compares a function's VJP with
finite differences of the same function in the inputs' own dtype (float32 differences need a tolerance of
2e-3, so an error of 1e-3 passes), along one random direction shared by all inputs (a wrong gradient for one
input is blurred into a single scalar), never against an independent reference, never under ``jit`` or
``vmap``, and its default forward mode cannot run on a ``custom_vjp`` at all. ``check_vjp`` compares with the
reference at the inputs' dtype, with finite differences in float64, per input, and names the input, the
check and the size of the error when one fails. An error raised by the rule (for instance JAX's "bwd rule
must produce an output with the same type" when a cotangent has the wrong shape) becomes a failed check
naming the input it concerns.

Errors are measured against the size of the expected value: for arrays, ``abs = max|got − want|`` and
``rel = abs / max|want|``; for the inner-product checks, the scale is the Cauchy–Schwarz bound of the inner
product (``‖Jᵀ·u‖·‖v‖``). A check passes when ``abs ≤ atol + rtol·scale``. NaN where the expected value is
NaN too counts as agreement (the rule matches its reference); NaN or inf anywhere else is an infinite error.
"""

from collections.abc import Callable
import dataclasses
import functools
import inspect
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CHECKS = ("forward", "vjp", "finite_differences", "jacobian", "transpose", "jit", "vmap", "second_order")

# (rtol, atol) by the dtype of the values compared; finite differences always run in float64.
TOLERANCES = {
    np.dtype(jnp.bfloat16): (5e-2, 1e-3),
    np.dtype(np.float16): (1e-2, 1e-4),
    np.dtype(np.float32): (1e-4, 1e-6),
    np.dtype(np.float64): (1e-8, 1e-12),
}
FD_TOLERANCE = (1e-6, 1e-12)


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
  """What ``check_vjp`` found: every check of every input, and the checks it skipped with why."""
  name: str
  entries: tuple   # of Entry
  skipped: tuple   # of (check, input, reason)

  @property
  def passed(self):
    return all(e.passed for e in self.entries)

  @property
  def failures(self):
    return tuple(e for e in self.entries if not e.passed)

  def __str__(self):
    bad, raised = self.failures, {}
    for e in bad:  # one line per exception, however many checks it broke
      if e.detail.startswith("raised"):
        raised.setdefault((e.input, e.detail.split(":")[0]), (e.detail, []))[1].append(e.check)
    found = [f"{e.check} for {e.input} off by {e.abs_err:.3g} (rel {e.rel_err:.3g})"
             for e in bad if not e.detail.startswith("raised")]
    found += [f"{', '.join(c)} for {i} {d}" for (i, _), (d, c) in raised.items()]
    head = f"check_vjp({self.name}): " + (
        f"all {len(self.entries)} checks passed" if not bad else
        f"FAILED {len(bad)} of {len(self.entries)} checks: " + "; ".join(found))
    lines = [head] + [f"  {e}" for e in self.entries]
    lines += [f"  skipped {c} for {i}: {why}" for c, i, why in self.skipped]
    return "\n".join(lines)


def _tolerance(dtype, rtol, atol):
  default = TOLERANCES.get(np.dtype(dtype), TOLERANCES[np.dtype(np.float32)])
  return (default[0] if rtol is None else rtol), (default[1] if atol is None else atol)


def _f64(x):
  return np.asarray(x, dtype=np.float64)


def _array_entry(check, label, got, want, tol):
  """Compares two arrays elementwise; NaN or inf where the other differs is an infinite error."""
  dtype, g, w = str(np.asarray(got).dtype), _f64(got), _f64(want)
  if g.shape != w.shape:
    return Entry(check, label, dtype, np.inf, np.inf, *tol, False, f"shape {g.shape}, expected {w.shape}")
  diff = np.where((g == w) | (np.isnan(g) & np.isnan(w)), 0.0, np.abs(g - w))
  diff = np.where(np.isnan(diff), np.inf, diff)
  finite = np.abs(w[np.isfinite(w)])
  scale = float(finite.max()) if finite.size else 0.0
  if not diff.size:
    return _entry(check, label, dtype, 0.0, scale, tol)
  worst = np.unravel_index(np.argmax(diff), diff.shape)
  detail = f"largest error at index {tuple(map(int, worst))}: got {g[worst]:.6g}, expected {w[worst]:.6g}"
  return _entry(check, label, dtype, float(diff[worst]), scale, tol, detail)


def _entry(check, label, dtype, abs_err, scale, tol, detail=""):
  rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else np.inf)
  passed = bool(abs_err <= tol[1] + tol[0] * scale)
  return Entry(check, label, dtype, abs_err, float(rel_err), *tol, passed, detail)


def _dot(a, b):
  """``⟨a, b⟩`` over all leaves of two pytrees of arrays, in float64."""
  return sum(float(np.vdot(_f64(x), _f64(y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _norm(a):
  return float(np.sqrt(sum(np.sum(_f64(x) ** 2) for x in jax.tree.leaves(a))))


class _Args:
  """The ``args`` pytrees split into differentiable leaves (floating arrays) and pass-through leaves."""

  def __init__(self, fn, args, kwargs, argnums):
    flat, self.treedef = jax.tree_util.tree_flatten_with_path(args)
    paths, self.leaves, self.kwargs = [p for p, _ in flat], [x for _, x in flat], kwargs
    self.diff = [i for i, (p, x) in enumerate(zip(paths, self.leaves)) if _is_float_array(x)
                 and (argnums is None or p[0].idx in argnums)]
    params = _positional_names(fn)
    self.labels = [_label(p, params) for p in paths]

  def bind(self, f, leaves=None):
    """``f`` as a function of the differentiable leaves only; the others are fixed."""
    base = list(self.leaves if leaves is None else leaves)

    def bound(*diff):
      full = list(base)
      for i, x in zip(self.diff, diff):
        full[i] = x
      return f(*jax.tree.unflatten(self.treedef, full), **self.kwargs)
    return bound

  def x(self):
    return [jnp.asarray(self.leaves[i]) for i in self.diff]


def _is_float_array(x):
  if not hasattr(x, "dtype") or not hasattr(x, "shape") or not jnp.issubdtype(x.dtype, jnp.inexact):
    return False
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"check_vjp: complex inputs are not supported (got dtype {x.dtype})")
  return True


def _positional_names(fn):
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return []
  return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _label(path, params):
  where = "args" + jax.tree_util.keystr(path)
  idx = path[0].idx
  return f"input '{params[idx]}' ({where})" if idx < len(params) else f"input {where}"


_BWD_TYPE_ERROR = re.compile(  # jax.custom_vjp's message for a cotangent of the wrong shape or dtype
    r"at output(\S*) the bwd rule produced .* corresponding to an input of type (\w+\[[\d,]*\])")


def _blame(exc, fn, spec):
  """Which input an exception from the backward concerns, where JAX's message says so."""
  m = _BWD_TYPE_ERROR.search(str(exc))
  if not m:
    return "the rule"
  path, aval = m.groups()
  avals = {i: f"{np.dtype(spec.leaves[i].dtype).name}[{','.join(map(str, np.shape(spec.leaves[i])))}]"
           for i in range(len(spec.leaves)) if hasattr(spec.leaves[i], "dtype")}
  if isinstance(fn, jax.custom_vjp):
    exact = [i for i in avals if spec.labels[i].endswith("(args" + path + ")") or
             spec.labels[i] == "input args" + path]
    if len(exact) == 1:
      return spec.labels[exact[0]]
  same = [i for i, a in avals.items() if a.split("[")[1:] == aval.split("[")[1:]]
  return spec.labels[same[0]] if len(same) == 1 else f"an input of type {aval} (bwd output{path})"


class _Options(NamedTuple):
  rtol: Any
  atol: Any
  fd_eps: float
  fd_tol: tuple
  directions: int
  jacobian_max_size: int


class _Checker:
  """Holds the inputs, the random cotangent ``u`` and tangents ``v``; one method per check."""

  def __init__(self, fn, reference, spec, opts, rng):
    self.fn, self.ref, self.spec, self.opts, self.rng = fn, reference, spec, opts, rng
    self.x = spec.x()
    self.labels = [spec.labels[i] for i in spec.diff]
    self.skipped = []
    if not self.x:
      raise ValueError("check_vjp: no differentiable inputs (no floating-point array among the args)")
    out = jax.eval_shape(spec.bind(reference), *self.x)
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
      if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(f"check_vjp: output{jax.tree_util.keystr(path)} has dtype {leaf.dtype};"
                        " only floating-point outputs can be checked")
    self.u = jax.tree.map(self._draw, out)
    self.v = [self._draw(x) for x in self.x]

  def _draw(self, like, base=None, spread=1.0):
    noise = self.rng.standard_normal(like.shape)
    return jnp.asarray(noise if base is None else _f64(base) * (1 + spread * noise), like.dtype)

  def tol(self, dtype):
    return _tolerance(dtype, self.opts.rtol, self.opts.atol)

  def _vjp(self, f, x, u, leaves=None):
    return jax.vjp(self.spec.bind(f, leaves), *x)[1](u)

  @functools.cached_property
  def manual(self):
    return self._vjp(self.fn, self.x, self.u)

  def _per_input(self, check, got, want):
    return [_array_entry(check, label, g, w, self.tol(x.dtype))
            for label, x, g, w in zip(self.labels, self.x, got, want)]

  def forward(self):
    got, want = self.spec.bind(self.fn)(*self.x), self.spec.bind(self.ref)(*self.x)
    if jax.tree.structure(got) != jax.tree.structure(want):
      return [Entry("forward", "output", "", np.inf, np.inf, 0.0, 0.0, False,
                    f"fn returns {jax.tree.structure(got)}, reference {jax.tree.structure(want)}")]
    return [_array_entry("forward", "output" + jax.tree_util.keystr(p), g, w, self.tol(w.dtype))
            for (p, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got))]

  def vjp(self):
    want = jax.jit(functools.partial(self._vjp, self.ref))(self.x, self.u)
    return self._per_input("vjp", self.manual, want)

  def finite_differences(self):
    with jax.enable_x64(True):
      leaves = [_f64(a) if _is_float_array(a) else a for a in self.spec.leaves]
      x = [jnp.asarray(leaves[i]) for i in self.spec.diff]
      u = jax.tree.map(lambda a: jnp.asarray(_f64(a)), self.u)
      ct = self._vjp(self.fn, x, u, leaves)
      f = jax.jit(self.spec.bind(self.fn, leaves))  # one compile for the 2·directions calls per input
      return [self._fd_input(f, x, u, k, _f64(ct[k])) for k in range(len(x))]

  def _fd_input(self, f, x, u, k, ct):
    """Worst of ``directions`` random unit directions: ⟨Jᵀ·u, v⟩ against central differences of ``f``.

    The absolute tolerance grows by the rounding error of the differences, ε₆₄·Σ|u|·(|f₊| + |f₋|)/2h: a
    gradient smaller than that cannot be seen by finite differences (the other checks still see it).
    """
    worst, scale, noise, detail = 0.0, 0.0, 0.0, ""
    h = self.opts.fd_eps * max(1.0, float(np.max(np.abs(_f64(x[k])), initial=0.0)))
    for _ in range(self.opts.directions):
      v = self.rng.standard_normal(x[k].shape)
      v /= max(float(np.linalg.norm(v)), 1e-300)
      plus = f(*x[:k], x[k] + h * v, *x[k + 1:])
      minus = f(*x[:k], x[k] - h * v, *x[k + 1:])
      fd = _dot(u, jax.tree.map(lambda p, m: (_f64(p) - _f64(m)) / (2 * h), plus, minus))
      size = jax.tree.map(lambda p, m: np.abs(_f64(p)) + np.abs(_f64(m)), plus, minus)
      noise = max(noise, np.finfo(np.float64).eps * _dot(jax.tree.map(np.abs, u), size) / (2 * h))
      manual = float(np.vdot(ct, v))
      err = abs(manual - fd) if np.isfinite(manual - fd) else np.inf
      scale = max(scale, float(np.linalg.norm(ct)), abs(fd))
      if err >= worst:
        worst, detail = err, f"⟨Jᵀ·u, v⟩ = {manual:.8g} from the rule, {fd:.8g} from finite differences"
    tol = (self.opts.fd_tol[0], self.opts.fd_tol[1] + noise)
    return _entry("finite_differences", self.labels[k], "float64", worst, scale, tol, detail)

  def jacobian(self):
    out_size, small = sum(np.size(a) for a in jax.tree.leaves(self.u)), []
    for k, (label, x) in enumerate(zip(self.labels, self.x)):
      if out_size * x.size <= self.opts.jacobian_max_size:
        small.append(k)
      else:
        self.skipped.append(("jacobian", label, f"the Jacobian has {out_size * x.size:,} entries"
                             f" > jacobian_max_size={self.opts.jacobian_max_size:,}"))
    if not small:
      return []
    jacs = jax.jit(jax.jacfwd(self.spec.bind(self.ref), argnums=tuple(small)))(*self.x)
    entries = []  # jacs: for each output leaf, a tuple of ∂out/∂x_k, shape out.shape + x_k.shape
    for i, k in enumerate(small):
      per_leaf = zip(jax.tree.leaves(self.u), jax.tree.structure(self.u).flatten_up_to(jacs))
      jtu = sum((np.tensordot(_f64(u), _f64(j[i]), axes=np.ndim(u)) for u, j in per_leaf),
                np.zeros(self.x[k].shape))
      entries.append(_array_entry("jacobian", self.labels[k], self.manual[k], jtu, self.tol(self.x[k].dtype)))
    return entries

  def transpose(self):
    def jvps(x, v):  # J·v_k for each input k alone, in one compiled program
      return [jax.jvp(self.spec.bind(self.ref), tuple(x), tuple(
          vk if j == k else jnp.zeros_like(xj) for j, xj in enumerate(x)))[1] for k, vk in enumerate(v)]
    entries = []
    for k, (label, x, v, jv) in enumerate(zip(self.labels, self.x, self.v, jax.jit(jvps)(self.x, self.v))):
      lhs, rhs = _dot(self.u, jv), _dot(self.manual[k], v)
      scale = max(_norm(self.u) * _norm(jv), _norm(self.manual[k]) * _norm(v))
      err = abs(lhs - rhs) if np.isfinite(lhs - rhs) else np.inf
      entries.append(_entry("transpose", label, str(x.dtype), err, scale, self.tol(x.dtype),
                            f"⟨u, J·v⟩ = {lhs:.8g} from the reference, ⟨Jᵀ·u, v⟩ = {rhs:.8g} from the rule"))
    return entries

  def jit(self):
    got = jax.jit(functools.partial(self._vjp, self.fn))(self.x, self.u)
    return self._per_input("jit", got, self.manual)

  def vmap(self):
    x1 = [self._draw(x, base=x, spread=0.05) for x in self.x]
    u1 = jax.tree.map(self._draw, self.u)
    stack = lambda a, b: jnp.stack([a, b])
    got = jax.jit(jax.vmap(functools.partial(self._vjp, self.fn)))(
        [stack(a, b) for a, b in zip(self.x, x1)], jax.tree.map(stack, self.u, u1))
    want = [np.stack([_f64(a), _f64(b)]) for a, b in zip(self.manual, self._vjp(self.fn, x1, u1))]
    return self._per_input("vmap", got, want)

  def _hvp(self, f):
    def inner(*x):
      return sum(jnp.vdot(c, v) for c, v in zip(self._vjp(f, x, self.u), self.v))
    return jax.jit(jax.grad(inner, argnums=tuple(range(len(self.x)))))(*self.x)

  def second_order(self):
    return self._per_input("second_order", self._hvp(self.fn), self._hvp(self.ref))


def _select(checks, second_order):
  names = tuple(CHECKS[:-1]) + (("second_order",) if second_order else ())
  if checks is not None:
    unknown = set(checks) - set(CHECKS)
    if unknown:
      raise ValueError(f"check_vjp: unknown checks {sorted(unknown)}; choose from {CHECKS}")
    names = tuple(c for c in CHECKS if c in checks)
  return names


def _wants_x64(args):
  return bool(jax.config.jax_enable_x64) or any(
      np.dtype(getattr(x, "dtype", np.float32)) == np.float64 for x in jax.tree.leaves(args)
      if hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended))


def check_vjp(fn: Callable, reference: Callable, *args, kwargs=None, argnums=None, checks=None,
              second_order=False, rtol=None, atol=None, fd_eps=1e-5, fd_rtol=None, directions=3,
              jacobian_max_size=100_000, seed=0) -> Report:
  """Proves ``fn``'s VJP rule against ``reference``; see the module docstring for the checks.

  Args:
    fn: the function whose gradient is hand-written (a ``jax.custom_vjp``, or built from them).
    reference: the same function in plain ``jnp`` that JAX differentiates itself; same signature.
    *args: the inputs, arrays or pytrees of arrays. Floating-point array leaves are differentiated;
      integer arrays, PRNG keys and Python scalars are passed through unchanged.
    kwargs: keyword arguments passed unchanged to ``fn`` and ``reference`` (e.g. ``axis=-1``).
    argnums: position or positions of ``args`` to differentiate (default: all); the rest are passed
      through unchanged, so a rule that returns no gradient for an array (``None``) can be checked.
    checks: a subset of ``CHECKS`` to run (default: all but ``second_order``).
    second_order: also run ``second_order`` (Hessian-vector products through the rule).
    rtol, atol: override the per-dtype ``TOLERANCES`` of every check but finite differences.
    fd_eps: step of the central differences, relative to ``max(1, max|x|)``.
    fd_rtol: relative tolerance of the finite-difference check (default ``FD_TOLERANCE``).
    directions: random directions per input for the finite-difference check.
    jacobian_max_size: largest Jacobian (entries, outputs × input) the ``jacobian`` check builds.
    seed: seeds the random cotangents, tangents and directions.

  Returns:
    A ``Report``: every check of every input with its errors and tolerance, and the skipped checks.

  Raises:
    AssertionError: with the report as its message (and as its ``report`` attribute) when any check
      fails, including when the rule raises (e.g. a cotangent of the wrong shape); the first line
      names each failing check, its input and the size of the error.
    ValueError, TypeError: for nothing to check (no floating-point input) or a non-float output.
  """
  names = _select(checks, second_order)
  argnums = (argnums,) if isinstance(argnums, int) else argnums
  fd_tol = (FD_TOLERANCE[0] if fd_rtol is None else fd_rtol, FD_TOLERANCE[1])
  opts = _Options(rtol, atol, fd_eps, fd_tol, directions, jacobian_max_size)
  with jax.enable_x64(_wants_x64(args)):
    spec = _Args(fn, args, kwargs or {}, argnums)
    checker = _Checker(fn, reference, spec, opts, np.random.default_rng(seed))
    entries, cause = [], None
    for name in names:
      try:
        entries += getattr(checker, name)()
      except Exception as exc:  # pylint: disable=broad-except  # the rule's error is the finding
        cause = cause or exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        entries.append(Entry(name, _blame(exc, fn, spec), "", np.inf, np.inf, 0.0, 0.0, False,
                             f"raised {type(exc).__name__}: {first[:400]}"))
  name = f"{getattr(fn, '__name__', repr(fn))} vs {getattr(reference, '__name__', repr(reference))}"
  report = Report(name, tuple(entries), tuple(checker.skipped))
  if not report.passed:
    error = AssertionError(str(report))
    error.report = report  # for programs that want the entries, not the text
    raise error from cause
  return report
