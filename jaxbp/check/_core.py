"""The classic checks of ``check_vjp``: forward, vjp, finite differences, jacobian, transpose, jit, vmap.

Each check measures once what does not depend on the rule's backward (the reference's VJP, its
Jacobian, finite differences of the forward), then compares the rule's cotangents with it in a
``compare_*`` method; the self-test replays those comparisons with errors planted in the cotangents.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check import precision
from jaxbp.check._args import is_float_array
from jaxbp.check._compare import LARGE
from jaxbp.check._compare import Entry
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import dot
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import norm
from jaxbp.check._compare import tolerance


class Options(NamedTuple):
  rtol: Any
  atol: Any
  fd_eps: float
  fd_tol: tuple
  directions: int
  jacobian_max_size: int
  memory_factor: float
  memory_floor: int
  nondet_tol: float


def _nbytes(tree):
  return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)
             if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended))


def _unit(v, ok):
  """Traced: ``v`` in float64, zero where ``ok`` is False, scaled to unit length."""
  v = jnp.where(ok, v.astype(jnp.float64), 0.0)
  return v / jnp.maximum(jnp.linalg.norm(v), 1e-300)


@jax.jit
def _dot_unit(ct, v, ok):
  """``⟨ct, v/‖v‖⟩`` on the device, in float64, the direction made exactly as ``_fd_compiled`` made it."""
  return jnp.vdot(jnp.where(ok, ct, 0.0), _unit(v, ok))


@jax.jit
def _masked_norm(ct, ok):
  return jnp.linalg.norm(jnp.where(ok, ct, 0.0))


@jax.jit
def _device_any_nan(a):
  return jnp.isnan(a).any()


def _any_nan(a):
  """Whether ``a`` holds a NaN: on the host for small arrays (no compilation), on the device above LARGE."""
  return bool(_device_any_nan(a)) if np.size(a) > LARGE else bool(np.isnan(np.asarray(a)).any())


class Checker:
  """Holds the inputs, the random cotangent ``u`` and tangents ``v``; one method per check."""

  def __init__(self, fn, reference, spec, opts, rng):
    self.fn, self.ref, self.spec, self.opts, self.rng = fn, reference, spec, opts, rng
    self.x = spec.x()
    self.labels = [spec.labels[i] for i in spec.diff]
    self.skipped, self.notes = [], []
    if not self.x:
      raise ValueError("check_vjp: no differentiable inputs (no floating-point array among the args)")
    self.out = jax.eval_shape(spec.bind(reference), *self.x)
    for path, leaf in jax.tree_util.tree_flatten_with_path(self.out)[0]:
      if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(f"check_vjp: output{jax.tree_util.keystr(path)} has dtype {leaf.dtype};"
                        " only floating-point outputs can be checked")
    self.u = jax.tree.map(self._draw, self.out)
    self.v = [self._draw(x) for x in self.x]

  def _draw(self, like, base=None, spread=1.0):
    """Standard normal noise of ``like``'s shape (or ``base`` perturbed by it), drawn in float32 or
    float64 so that a large input costs no float64 copy it does not need."""
    work = np.float64 if np.dtype(like.dtype) == np.float64 else np.float32
    noise = self.rng.standard_normal(like.shape, dtype=work)
    return jnp.asarray(noise if base is None else np.asarray(base, work) * (1 + spread * noise), like.dtype)

  def tol(self, dtype):
    return tolerance(dtype, self.opts.rtol, self.opts.atol)

  def _vjp(self, f, x, u, leaves=None):
    return jax.vjp(self.spec.bind(f, leaves), *x)[1](u)

  @functools.cached_property
  def manual(self):
    """The rule's VJP of ``u``: eager, or compiled once for large inputs (the eager one is ``jit``'s)."""
    return self.manual_jit(self.x, self.u) if self.large else self.manual_eager

  @functools.cached_property
  def manual_eager(self):
    return self._vjp(self.fn, self.x, self.u)

  @functools.cached_property
  def manual_jit(self):
    """The rule's VJP, compiled once and shared by ``jit``, ``linearity`` and ``determinism``."""
    return jax.jit(functools.partial(self._vjp, self.fn))

  @functools.cached_property
  def _reference(self):
    """The reference's output and its VJP of ``u``, one compiled program; its memory is the measure of
    "the rule's own memory"."""
    def program(x, u):
      out, pullback = jax.vjp(self.spec.bind(self.ref), *x)
      return out, pullback(u)
    compiled = jax.jit(program).lower(self.x, self.u).compile()
    try:
      mem = compiled.memory_analysis()
      assert mem is not None
      self.rule_bytes = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    except Exception:  # pylint: disable=broad-except  # a backend without memory analysis
      self.rule_bytes = 2 * (_nbytes(self.x) + _nbytes(self.out))
    return compiled(self.x, self.u)

  @property
  def expected(self):
    """The reference's VJP of ``u``."""
    return self._reference[1]

  @property
  def ref_out(self):
    """The reference's output (from the same compiled program as its VJP)."""
    return self._reference[0]

  @functools.cached_property
  def masks(self):
    """Where the reference's output and VJP are NaN: agreement there is NaN, and directional checks skip it."""
    outs, ins = jax.tree.leaves(self.ref_out), list(self.expected)
    if not any(_any_nan(a) for a in outs + ins):  # the usual case: nothing to mask, no copies
      return [np.True_] * len(outs), [np.True_] * len(ins)
    return [~np.isnan(f64(w)) for w in outs], [~np.isnan(f64(w)) for w in ins]

  def _maybe_jit(self, f):
    """``f`` compiled for large inputs (fused: no eager temporaries of their size), else as it is."""
    return jax.jit(f) if self.large else f

  @property
  def memory_limit(self):
    _ = self.expected
    return max(self.opts.memory_factor * self.rule_bytes, self.opts.memory_floor)

  def per_input(self, check, got, want):
    return [array_entry(check, label, g, w, self.tol(x.dtype), x.dtype, x.shape)
            for label, x, g, w in zip(self.labels, self.x, got, want)]

  def forward(self):
    got, want = self._maybe_jit(self.spec.bind(self.fn))(*self.x), self.ref_out
    if jax.tree.structure(got) != jax.tree.structure(want):  # type: ignore[operator]
      return [Entry("forward", "output", "", np.inf, np.inf, 0.0, 0.0, False,
                    f"fn returns {jax.tree.structure(got)}, reference {jax.tree.structure(want)}")]
    return [array_entry("forward", "output" + jax.tree_util.keystr(p), g, w, self.tol(w.dtype), w.dtype,
                        w.shape) for (p, w), g in zip(jax.tree_util.tree_flatten_with_path(want)[0],
                                                      jax.tree.leaves(got))]

  def vjp(self):
    return self.compare_vjp(self.manual)

  def compare_vjp(self, ct):
    if precision.is_bfloat16(self.x):  # bfloat16: against the float64 truth, within the rule's bound
      return precision.vjp_entries(self, ct)
    return self.per_input("vjp", ct, self.expected)

  # --- finite differences: measured once (fd_data), compared with any float64 cotangent (compare_fd) ---

  def finite_differences(self):
    grow = 1 if all(x.dtype == np.float64 for x in self.x) else 3  # float64 copies and their differences
    need = grow * self.rule_bytes_estimate()
    if need > self.memory_limit:
      for label in self.labels:
        self.skipped.append(("finite_differences", label, f"float64 copies would take ~{need:,} bytes >"
                             f" the memory bound {self.memory_limit:,.0f}"))
      return []
    return self.compare_fd(self.fd_manual)

  def rule_bytes_estimate(self):
    _ = self.expected
    return self.rule_bytes

  @functools.cached_property
  def large(self):
    """Whether an input has more than ``LARGE`` elements: then the float64 work runs compiled, on the
    device, with no float64 copy on the host (the self-test, which replays on the host, is skipped)."""
    return any(np.size(x) > LARGE for x in self.x)

  @functools.cached_property
  def fd_manual(self):
    """The rule's VJP in float64 (inputs, cotangent and all), for the finite-difference comparison."""
    with jax.enable_x64(True):
      if self.large:  # one compiled program converting on the device: no host copy of a large input
        _ = self.masks  # measured before tracing: it reads values
        return list(jax.jit(lambda leaves, u: self._vjp(self.fn, *self._in64(leaves, u)))(
            self.spec.leaves, self.u))
      leaves, x, u = self._x64()
      return [f64(c) for c in self._vjp(self.fn, x, u, leaves)]

  def _in64(self, leaves, u):
    """Traced: the leaves and the cotangent in float64 (u zero where the reference's output is NaN)."""
    leaves = [a.astype(jnp.float64) if is_float_array(a) else a for a in leaves]
    u = jax.tree.map(lambda a, ok: jnp.where(ok, a.astype(jnp.float64), 0.0), u,
                     jax.tree.unflatten(jax.tree.structure(u), self.masks[0]))
    return [leaves[i] for i in self.spec.diff], u, leaves

  def _x64(self):
    leaves = [f64(a) if is_float_array(a) else a for a in self.spec.leaves]
    x = [jnp.asarray(leaves[i]) for i in self.spec.diff]
    u = jax.tree.map(lambda a, ok: jnp.asarray(np.where(ok, f64(a), 0.0)), self.u,
                     jax.tree.unflatten(jax.tree.structure(self.u), self.masks[0]))
    return leaves, x, u

  @functools.cached_property
  def fd_data(self):
    """Per input, per direction: (v, the central difference ⟨u, Δf⟩/2h, its rounding-error bound)."""
    with jax.enable_x64(True):
      if self.large:
        return self._fd_compiled()
      leaves, x, u = self._x64()
      f = jax.jit(self.spec.bind(self.fn, leaves))  # one compile for the 2·directions calls per input
      return [self._fd_input(f, x, u, k) for k in range(len(x))]

  def _fd_input(self, f, x, u, k):
    """Central differences of ``f`` along ``directions`` random unit directions (not where J·u is NaN)."""
    rows = []
    h = self.opts.fd_eps * max(1.0, float(np.max(np.abs(np.nan_to_num(f64(x[k]))), initial=0.0)))
    for _ in range(self.opts.directions):
      v = np.where(self.masks[1][k], self.rng.standard_normal(x[k].shape), 0.0)
      v /= max(float(np.linalg.norm(v)), 1e-300)
      xk = f64(x[k])  # the steps on the host: no eager operation to compile
      plus = f(*x[:k], xk + h * v, *x[k + 1:])
      minus = f(*x[:k], xk - h * v, *x[k + 1:])
      diff = jax.tree.map(lambda p, m: (f64(p) - f64(m)) / (2 * h), plus, minus)
      fd = dot(u, diff, self.masks[0])
      size = jax.tree.map(lambda p, m: np.abs(f64(p)) + np.abs(f64(m)), plus, minus)
      noise = np.finfo(np.float64).eps * dot(jax.tree.map(np.abs, u), size, self.masks[0]) / (2 * h)
      rows.append((v, fd, noise))
    return rows

  def _fd_compiled(self):
    """``fd_data`` for large inputs: per input, one compiled program (float64 inside) per direction."""
    def program(leaves, u, k, v, h):
      x, u, leaves = self._in64(leaves, u)
      v = _unit(v, self.masks[1][k])
      f = self.spec.bind(self.fn, leaves)
      plus = f(*x[:k], x[k] + h * v, *x[k + 1:])
      minus = f(*x[:k], x[k] - h * v, *x[k + 1:])
      fd = sum(jnp.vdot(a, (p - m) / (2 * h)) for a, p, m in zip(*map(jax.tree.leaves, (u, plus, minus))))
      size = sum(jnp.vdot(jnp.abs(a), jnp.abs(p) + jnp.abs(m))
                 for a, p, m in zip(*map(jax.tree.leaves, (u, plus, minus))))
      return fd, jnp.finfo(jnp.float64).eps * size / (2 * h)
    _ = self.masks  # measured before tracing: it reads values
    run = jax.jit(program, static_argnums=2)
    rows: list[list] = []
    for k, x in enumerate(self.x):
      h = self.opts.fd_eps * max(1.0, float(jnp.max(jnp.abs(jnp.nan_to_num(x)), initial=0.0)))
      rows.append([])
      for _ in range(self.opts.directions):
        v = self._draw(x)  # in the input's precision: a float32 input costs no float64 draw
        fd, noise = (float(a) for a in run(self.spec.leaves, self.u, k, v, h))
        rows[-1].append((v, fd, noise))
    return rows

  def compare_fd(self, ct64):
    """Worst direction per input: ⟨Jᵀ·u, v⟩ against central differences of the rule's forward.

    The absolute tolerance grows by the rounding error of the differences, ε₆₄·Σ|u|·(|f₊| + |f₋|)/2h: a
    gradient smaller than that cannot be seen by finite differences (the other checks still see it).
    """
    return [self._fd_entry(k, ct) for k, ct in enumerate(ct64)]

  def _fd_entry(self, k, ct):
    if self.large:
      with jax.enable_x64(True):
        ok = jnp.asarray(self.masks[1][k])
        return self._fd_entry_on(k, ct, lambda v: float(_dot_unit(ct, v, ok)), float(_masked_norm(ct, ok)))
    ok = self.masks[1][k]
    ct = np.where(ok, ct, 0.0) if not ok.all() else ct
    return self._fd_entry_on(k, ct, lambda v: float(np.vdot(ct, v)), float(np.linalg.norm(ct)))

  def _fd_entry_on(self, k, ct, manual_dot, ct_norm):
    worst, scale, noise, detail = 0.0, 0.0, 0.0, ""
    for v, fd, n in self.fd_data[k]:
      manual = manual_dot(v)
      err = abs(manual - fd) if np.isfinite(manual - fd) else np.inf
      scale, noise = max(scale, ct_norm, abs(fd)), max(noise, n)
      if err >= worst:
        worst, detail = err, f"⟨Jᵀ·u, v⟩ = {manual:.8g} from the rule, {fd:.8g} from finite differences"
    tol = (self.opts.fd_tol[0], self.opts.fd_tol[1] + noise)
    return entry("finite_differences", self.labels[k], "float64", worst, scale, tol, detail)

  # --- the explicit Jacobian of the reference, contracted with u ---

  def jacobian(self):
    return self.compare_jacobian(self.manual)

  @functools.cached_property
  def jtu(self):
    """``uᵀJ`` per input from the reference's explicit Jacobian, or None where it is skipped."""
    out_size = sum(np.size(a) for a in jax.tree.leaves(self.u))
    small = []
    for k, (label, x) in enumerate(zip(self.labels, self.x)):
      need = x.size * self.rule_bytes_estimate()  # jacfwd pushes one tangent per input element at once
      if out_size * x.size > self.opts.jacobian_max_size:
        self.skipped.append(("jacobian", label, f"the Jacobian has {out_size * x.size:,} entries"
                             f" > jacobian_max_size={self.opts.jacobian_max_size:,}"))
      elif need > self.memory_limit:
        self.skipped.append(("jacobian", label, f"jacfwd would allocate ~{need:,} bytes ({x.size:,} tangents"
                             f" × the rule's {self.rule_bytes:,} bytes) > the memory bound"
                             f" {self.memory_limit:,.0f}"))
      else:
        small.append(k)
    if not small:
      return {}
    jacs = jax.jit(jax.jacfwd(self.spec.bind(self.ref), argnums=tuple(small)))(*self.x)
    out = {}  # jacs: for each output leaf, a tuple of ∂out/∂x_k, shape out.shape + x_k.shape
    for i, k in enumerate(small):
      per_leaf = zip(jax.tree.leaves(self.u), self.masks[0], jax.tree.structure(self.u).flatten_up_to(jacs))  # type: ignore[attr-defined]
      jtu = sum((np.tensordot(np.where(ok, f64(u), 0.0), np.where(ok.reshape(ok.shape + (1,) * x.ndim),
                                                                 f64(j[i]), 0.0), axes=np.ndim(u))
                 for u, ok, j in per_leaf), np.zeros(self.x[k].shape))
      out[k] = np.where(self.masks[1][k], jtu, np.nan)
    return out

  def compare_jacobian(self, ct):
    return [array_entry("jacobian", self.labels[k], ct[k], w, self.tol(self.x[k].dtype), self.x[k].dtype,
                        self.x[k].shape) for k, w in self.jtu.items()]

  # --- ⟨u, J·v⟩ from the reference's JVP against ⟨Jᵀ·u, v⟩ from the rule ---

  def transpose(self):
    return self.compare_transpose(self.manual)

  @functools.cached_property
  def jv(self):
    def jvps(x, v):  # J·v_k for each input k alone, in one compiled program
      return [self.spec.jvp_of(self.ref, x, k, vk) for k, vk in enumerate(v)]
    v = [jnp.where(ok, vk, 0) if not ok.all() else vk for vk, ok in zip(self.v, self.masks[1])]
    return v, jax.jit(jvps)(self.x, v)

  def compare_transpose(self, ct):
    entries, (vs, jvs) = [], self.jv
    for k, (label, x, v, jv) in enumerate(zip(self.labels, self.x, vs, jvs)):
      ok = self.masks[1][k]
      c = jnp.where(ok, ct[k], 0) if not ok.all() else ct[k]
      lhs, rhs = dot(self.u, jv, self.masks[0]), dot(c, v)
      scale = max(norm(self.u, self.masks[0]) * norm(jv, self.masks[0]), norm(c) * norm(v))
      err = abs(lhs - rhs) if np.isfinite(lhs - rhs) else np.inf
      entries.append(entry("transpose", label, str(x.dtype), err, scale, self.tol(x.dtype),
                           f"⟨u, J·v⟩ = {lhs:.8g} from the reference, ⟨Jᵀ·u, v⟩ = {rhs:.8g} from the rule"))
    return entries

  def jit(self):
    return self.per_input("jit", self.manual_jit(self.x, self.u), self.manual_eager)

  def vmap(self):
    x1 = [self._draw(x, base=x, spread=0.05) for x in self.x]
    u1 = jax.tree.map(self._draw, self.u)
    stack = lambda a, b: jnp.stack([a, b])
    got = jax.jit(jax.vmap(functools.partial(self._vjp, self.fn)))(
        [stack(a, b) for a, b in zip(self.x, x1)], jax.tree.map(stack, self.u, u1))
    pair = jnp.stack if self.large else lambda ab: np.stack([f64(a) for a in ab])  # no host copy when large
    other = self.manual_jit(x1, u1) if self.large else self._vjp(self.fn, x1, u1)  # compiled once already
    want = [pair([a, b]) for a, b in zip(self.manual, other)]
    return [array_entry("vmap", label, g, w, self.tol(x.dtype), x.dtype, (2,) + x.shape)
            for label, x, g, w in zip(self.labels, self.x, got, want)]

  def _hvp(self, f):
    def inner(*x):
      return sum(jnp.vdot(c, v) for c, v in zip(self._vjp(f, x, self.u), self.v))
    return jax.jit(jax.grad(inner, argnums=tuple(range(len(self.x)))))(*self.x)

  @functools.cached_property
  def hvps(self):
    """∂/∂x ⟨bwd(x, u), v⟩ of the rule and of the reference (rev over rev), computed once per check run."""
    return self._hvp(self.fn), self._hvp(self.ref)

  def second_order(self):
    return self.per_input("second_order", *self.hvps)
