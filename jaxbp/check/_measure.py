"""What a check run measures once, before any check compares: the inputs, the random cotangent and
tangents, the rule's VJP, the reference's output and VJP, where the reference is NaN, the memory bound,
the reference's explicit Jacobian and its J·v, and the data the linearity and second-order checks share.

``Inputs`` is what ``check_vjp`` and ``check_jvp`` share (the differentiable leaves, their labels, the
output's shape, the tolerances, the skipped checks and notes); ``Measured`` adds what ``check_vjp``'s
checks compare with. The checks themselves are functions of a ``Measured`` (``_classic``, ``_more``),
named in one table (``_table``).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check import _fd
from jaxbp.check import _truth
from jaxbp.check._compare import LARGE
from jaxbp.check._compare import f64
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


def nbytes(tree) -> int:
  return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)
             if hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended))


@jax.jit
def _device_any_nan(a):
  return jnp.isnan(a).any()


def _any_nan(a):
  """Whether ``a`` holds a NaN: on the host for small arrays (no compilation), on the device above LARGE."""
  return bool(_device_any_nan(a)) if np.size(a) > LARGE else bool(np.isnan(np.asarray(a)).any())


def _coarsest(dtypes):
  """The least precise of floating dtypes (largest machine epsilon)."""
  return max(dtypes, key=lambda d: float(jnp.finfo(d).eps))


class Inputs:
  """The differentiable inputs of one call, their labels, the output's shape, skipped checks and notes."""

  def __init__(self, fn, reference, spec, rng, rtol=None, atol=None, kind="check_vjp"):
    self.fn, self.ref, self.spec, self.rng, self.kind = fn, reference, spec, rng, kind
    self.rtol, self.atol = rtol, atol
    self.truths: dict = {}  # the float64 truths of bfloat16/float16 checks, by what they are (_truth.truth)
    self.x = spec.x()
    self.labels = [spec.labels[i] for i in spec.diff]
    self.skipped: list[tuple[str, str, str]] = []
    self.notes: list[str] = []
    if not self.x:
      raise ValueError(f"{kind}: no differentiable inputs (no floating-point array among the args)")
    self.out = jax.eval_shape(spec.bind(reference), *self.x)
    for path, leaf in jax.tree_util.tree_flatten_with_path(self.out)[0]:
      if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(f"{kind}: output{jax.tree_util.keystr(path)} has dtype {leaf.dtype};"
                        " only floating-point outputs can be checked")
    # With inputs of several precisions (a bfloat16 prediction, a float32 target), a value of the finer
    # dtype carries the coarser one's rounding: every comparison is held to the coarsest input's tolerance.
    self.coarsest = _coarsest([np.dtype(x.dtype) for x in self.x])

  def draw(self, like, base=None, spread=1.0):
    """Standard normal noise of ``like``'s shape (or ``base`` perturbed by it), drawn in float32 or
    float64 so that a large input costs no float64 copy it does not need."""
    work = np.float64 if np.dtype(like.dtype) == np.float64 else np.float32
    noise = self.rng.standard_normal(like.shape, dtype=work)
    return jnp.asarray(noise if base is None else np.asarray(base, work) * (1 + spread * noise), like.dtype)

  def tol(self, dtype):
    """(rtol, atol) for values of ``dtype``: that of ``dtype`` or of the coarsest input, the looser."""
    coarse = _coarsest([np.dtype(dtype), self.coarsest])
    return tolerance(coarse, self.rtol, self.atol, coarse if coarse != np.dtype(dtype) else None)


class Measured(Inputs):
  """Everything ``check_vjp``'s checks compare with, each measured once, when first asked for."""

  def __init__(self, fn, reference, spec, opts, rng):
    super().__init__(fn, reference, spec, rng, opts.rtol, opts.atol)
    self.opts = opts
    self.u = jax.tree.map(self.draw, self.out)
    self.v = [self.draw(x) for x in self.x]

  def vjp(self, f, x, u, leaves=None):
    """The VJP of ``u`` through ``f`` (bound to the differentiable inputs ``x``)."""
    return jax.vjp(self.spec.bind(f, leaves), *x)[1](u)

  @functools.cached_property
  def large(self) -> bool:
    """Whether an input has more than ``LARGE`` elements: then the float64 work runs compiled, on the
    device, with no float64 copy on the host (the self-test, which replays on the host, is skipped)."""
    return any(np.size(x) > LARGE for x in self.x)

  def maybe_jit(self, f):
    """``f`` compiled for large inputs (fused: no eager temporaries of their size), else as it is."""
    return jax.jit(f) if self.large else f

  # --- the rule's side ---

  @functools.cached_property
  def rule_vjp(self):
    """``jax.vjp`` of the rule, eagerly: its primal output (what ``value_and_grad`` returns) and pullback."""
    return jax.vjp(self.spec.bind(self.fn), *self.x)

  def primals(self):
    """The rule's output from a plain call and from ``jax.vjp`` (compiled for large inputs)."""
    bound = self.spec.bind(self.fn)
    if self.large:  # one program for both: at these sizes a compilation is the expensive part
      plain, via_vjp = jax.jit(lambda *x: (bound(*x), jax.vjp(bound, *x)[0]))(*self.x)
      return [("", plain), (" (jax.vjp)", via_vjp)]
    return [("", bound(*self.x)), (" (jax.vjp)", self.rule_vjp[0])]

  @functools.cached_property
  def manual(self):
    """The rule's VJP of ``u``: eager, or compiled once for large inputs (the eager one is ``jit``'s)."""
    return self.manual_jit(self.x, self.u) if self.large else self.manual_eager

  @functools.cached_property
  def manual_eager(self):
    return self.rule_vjp[1](self.u)

  @functools.cached_property
  def manual_jit(self):
    """The rule's VJP, compiled once and shared by ``jit``, ``linearity`` and ``determinism``."""
    return jax.jit(functools.partial(self.vjp, self.fn))

  @functools.cached_property
  def fd_manual(self):
    """The rule's VJP in float64 (inputs, cotangent and all), for the finite-difference comparison."""
    return _fd.manual64(self)

  @functools.cached_property
  def lin_data(self):
    """The rule's compiled VJP of ``u``, of another cotangent ``w``, of ``a·u + b·w`` and of zero."""
    a, b = LINEAR_AB
    w = jax.tree.map(self.draw, self.u)
    mix = jax.tree.map(lambda p, q: (a * f64(p) + b * f64(q)).astype(p.dtype), self.u, w)
    zero = jax.tree.map(jnp.zeros_like, self.u)
    return tuple(self.manual_jit(self.x, c) for c in (self.u, w, mix, zero))

  # --- the reference's side ---

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
      self.rule_bytes = 2 * (nbytes(self.x) + nbytes(self.out))
    return compiled(self.x, self.u)

  @property
  def expected(self):
    """The reference's VJP of ``u``."""
    return self._reference[1]

  @property
  def ref_out(self):
    """The reference's output (from the same compiled program as its VJP)."""
    return self._reference[0]

  @property
  def memory_limit(self) -> float:
    _ = self.expected
    return max(self.opts.memory_factor * self.rule_bytes, self.opts.memory_floor)

  def rule_bytes_estimate(self) -> int:
    _ = self.expected
    return self.rule_bytes

  @functools.cached_property
  def masks(self):
    """Where the reference's output and VJP are NaN: agreement there is NaN, and directional checks skip it."""
    outs, ins = jax.tree.leaves(self.ref_out), list(self.expected)
    if not any(_any_nan(a) for a in outs + ins):  # the usual case: nothing to mask, no copies
      return [np.True_] * len(outs), [np.True_] * len(ins)
    return [~np.isnan(f64(w)) for w in outs], [~np.isnan(f64(w)) for w in ins]

  @functools.cached_property
  def fd_data(self):
    """Per input, per direction: (v, the central difference ⟨u, Δf⟩/2h, its rounding-error bound)."""
    return _fd.differences(self)

  @functools.cached_property
  def jtu(self):
    """``uᵀJ`` per input from the reference's explicit Jacobian; inputs where it is skipped are absent."""
    return _jtu(self)

  @functools.cached_property
  def jv(self):
    """The tangents ``v`` (zero where the reference's VJP is NaN) and ``J·v`` of the reference, per input."""
    def jvps(x, v):  # J·v_k for each input k alone, in one compiled program
      return [self.spec.jvp_of(self.ref, x, k, vk) for k, vk in enumerate(v)]
    v = [jnp.where(ok, vk, 0) if not ok.all() else vk for vk, ok in zip(self.v, self.masks[1])]
    if _truth.narrow(self):  # bfloat16 or float16: J·v of the float64 truth
      return v, _truth.truth(self, "jv", lambda: jax.jit(lambda x, v: [
          self.spec.jvp_of(self.ref, x, k, vk, _truth.up(self, self.spec.leaves)) for k, vk in enumerate(v)])(
              _truth.up(self, self.x), _truth.up(self, v)))
    return v, jax.jit(jvps)(self.x, v)

  def hvp(self, f):
    def inner(*x):
      return sum(jnp.vdot(c, v) for c, v in zip(self.vjp(f, x, self.u), self.v))
    return jax.jit(jax.grad(inner, argnums=tuple(range(len(self.x)))))(*self.x)

  @functools.cached_property
  def hvps(self):
    """∂/∂x ⟨bwd(x, u), v⟩ of the rule and of the reference (rev over rev), computed once per check run."""
    return self.hvp(self.fn), self.hvp(self.ref)


# a, b of the linearity check: neither 1 nor 0 and a + b ≠ 1, so a constant term or sign(g) shows
LINEAR_AB = (0.75, -1.5)


def _jtu(m):
  out_size = sum(np.size(a) for a in jax.tree.leaves(m.u))
  small, wide = [], 4 if _truth.narrow(m) else 1  # on 2-byte inputs the Jacobian is built in float64
  for k, (label, x) in enumerate(zip(m.labels, m.x)):
    need = x.size * m.rule_bytes_estimate() * wide  # jacfwd pushes one tangent per input element at once
    if out_size * x.size > m.opts.jacobian_max_size:
      m.skipped.append(("jacobian", label, f"the Jacobian has {out_size * x.size:,} entries"
                        f" > jacobian_max_size={m.opts.jacobian_max_size:,}"))
    elif need > m.memory_limit:
      m.skipped.append(("jacobian", label, f"jacfwd would allocate ~{need:,} bytes ({x.size:,} tangents"
                        f" × the rule's {m.rule_bytes:,} bytes) > the memory bound {m.memory_limit:,.0f}"))
    else:
      small.append(k)
  if not small:
    return {}
  if _truth.narrow(m):  # bfloat16 or float16: the float64 truth's Jacobian
    jacs = _truth.truth(m, "jacobian", lambda: jax.jit(jax.jacfwd(_truth.wide_reference(m), argnums=tuple(small)))(
        *_truth.up(m, m.x)))
  else:
    jacs = jax.jit(jax.jacfwd(m.spec.bind(m.ref), argnums=tuple(small)))(*m.x)
  out = {}  # jacs: for each output leaf, a tuple of ∂out/∂x_k, shape out.shape + x_k.shape
  for i, k in enumerate(small):
    per_leaf = zip(jax.tree.leaves(m.u), m.masks[0], jax.tree.structure(m.u).flatten_up_to(jacs))  # type: ignore[attr-defined]
    jtu = sum((np.tensordot(np.where(ok, f64(u), 0.0), np.where(ok.reshape(ok.shape + (1,) * m.x[k].ndim),
                                                               f64(j[i]), 0.0), axes=np.ndim(u))
               for u, ok, j in per_leaf), np.zeros(m.x[k].shape))
    out[k] = np.where(m.masks[1][k], jtu, np.nan)
  return out
