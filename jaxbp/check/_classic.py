"""The classic checks: forward, vjp, jacobian, transpose, jit, vmap, second order (finite differences:
``_fd``). Each is a function of a ``Measured``; those the self-test replays split into the check and a
``compare_*`` of any cotangents against what was measured once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check import _truth
from jaxbp.check._compare import Entry
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import dot
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64
from jaxbp.check._compare import norm


def per_input(m, check, got, want) -> list[Entry]:
  """One entry per differentiable input: ``got`` against ``want``, at exactly the primal's dtype and shape."""
  return [array_entry(check, label, g, w, m.tol(x.dtype), x.dtype, x.shape)
          for label, x, g, w in zip(m.labels, m.x, got, want)]


def forward(m) -> list[Entry]:
  """Each way the rule computes its output (a plain call, and the primal that ``jax.vjp`` or ``jax.jvp``
  returns, which is other code for a rule whose forward under differentiation forms its gradients)
  against the reference's output, leaf by leaf. Shared by ``check_vjp`` and ``check_jvp``."""
  want, out = m.ref_out, []
  flat = jax.tree_util.tree_flatten_with_path(want)[0]
  refs = [w for _, w in flat]
  truth = _truth.truth(m, "forward", lambda: jax.jit(_truth.wide_reference(m))(*_truth.up(m, m.x))) \
      if _truth.narrow(m) else None
  for how, got in m.primals():
    if jax.tree.structure(got) != jax.tree.structure(want):  # type: ignore[operator]
      out.append(Entry("forward", "output" + how, "", np.inf, np.inf, 0.0, 0.0, False,
                       f"fn returns {jax.tree.structure(got)}, reference {jax.tree.structure(want)}"))
      continue
    labels = ["output" + jax.tree_util.keystr(p) + how for p, _ in flat]
    if truth is not None:  # bfloat16 or float16: against the float64 truth, within the rule's bound
      out += _truth.entries("forward", m, labels, jax.tree.leaves(got), jax.tree.leaves(truth), refs, refs)
      continue
    out += [array_entry("forward", label, g, w, m.tol(w.dtype), w.dtype, w.shape)
            for label, w, g in zip(labels, refs, jax.tree.leaves(got))]
  return out


def vjp(m) -> list[Entry]:
  return compare_vjp(m, m.manual)


def compare_vjp(m, ct) -> list[Entry]:
  if _truth.narrow(m):  # bfloat16 or float16: against the float64 truth, within the rule's bound
    truth = _truth.truth(m, "vjp", lambda: jax.jit(lambda x, u: jax.vjp(_truth.wide_reference(m), *x)[1](u))(
        _truth.up(m, m.x), _truth.up(m, m.u)))
    return _truth.entries("vjp", m, m.labels, ct, truth, m.x, m.expected)
  return per_input(m, "vjp", ct, m.expected)


def jacobian(m) -> list[Entry]:
  return compare_jacobian(m, m.manual)


def compare_jacobian(m, ct) -> list[Entry]:
  """``Jᵀ·u`` against the reference's explicit Jacobian contracted with ``u``, for the inputs where it is built
  (on bfloat16 or float16 inputs, the Jacobian in float64, within the rule's bound)."""
  if _truth.narrow(m):
    k = list(m.jtu)
    return _truth.entries("jacobian", m, [m.labels[i] for i in k], [ct[i] for i in k], [m.jtu[i] for i in k],
                          [m.x[i] for i in k])
  return [array_entry("jacobian", m.labels[k], ct[k], w, m.tol(m.x[k].dtype), m.x[k].dtype, m.x[k].shape)
          for k, w in m.jtu.items()]


def transpose(m) -> list[Entry]:
  return compare_transpose(m, m.manual)


def compare_transpose(m, ct) -> list[Entry]:
  """``⟨u, J·v⟩`` from the reference's JVP against ``⟨Jᵀ·u, v⟩`` from the rule, per input (on bfloat16 or
  float16 inputs J·v is the float64 truth's, and the tolerance the rule's bound)."""
  entries, (vs, jvs) = [], m.jv
  bound = _truth.bound(m) if _truth.narrow(m) else None
  for k, (label, x, v, jv) in enumerate(zip(m.labels, m.x, vs, jvs)):
    ok = m.masks[1][k]
    c = jnp.where(ok, ct[k], 0) if not ok.all() else ct[k]
    lhs, rhs = dot(m.u, jv, m.masks[0]), dot(c, v)
    scale = max(norm(m.u, m.masks[0]) * norm(jv, m.masks[0]), norm(c) * norm(v))
    err = abs(lhs - rhs) if np.isfinite(lhs - rhs) else np.inf
    tol, against = (m.tol(x.dtype), "") if bound is None else (
        (bound[1], 0.0), f" (in float64; bound {bound[1]:.1e}, {bound[0]})")
    entries.append(entry("transpose", label, str(x.dtype), err, scale, tol,
                         f"⟨u, J·v⟩ = {lhs:.8g} from the reference{against}, ⟨Jᵀ·u, v⟩ = {rhs:.8g} from the rule"))
  return entries


def jit(m) -> list[Entry]:
  return per_input(m, "jit", m.manual_jit(m.x, m.u), m.manual_eager)


def vmap(m) -> list[Entry]:
  """The VJP ``vmap``-ed over two stacked copies (the second perturbed) against each copy's own."""
  x1 = [m.draw(x, base=x, spread=0.05) for x in m.x]
  u1 = jax.tree.map(m.draw, m.u)
  stack = lambda a, b: jnp.stack([a, b])
  got = jax.jit(jax.vmap(functools.partial(m.vjp, m.fn)))(
      [stack(a, b) for a, b in zip(m.x, x1)], jax.tree.map(stack, m.u, u1))
  pair = jnp.stack if m.large else lambda ab: np.stack([f64(a) for a in ab])  # no host copy when large
  other = m.manual_jit(x1, u1) if m.large else m.vjp(m.fn, x1, u1)  # compiled once already
  want = [pair([a, b]) for a, b in zip(m.manual, other)]
  return [array_entry("vmap", label, g, w, m.tol(x.dtype), x.dtype, (2,) + x.shape)
          for label, x, g, w in zip(m.labels, m.x, got, want)]


def second_order(m) -> list[Entry]:
  return per_input(m, "second_order", *m.hvps)
