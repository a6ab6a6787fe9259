"""The ``finite_differences`` check: ``⟨Jᵀ·u, v⟩`` of the rule against central differences of its forward.

Measured once (``differences``: per input and direction, ⟨u, Δf⟩/2h in float64 and its rounding-error
bound) and compared with any float64 cotangent (``compare``), so the self-test replays it for free.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.check._args import is_float_array
from jaxbp.check._compare import Entry
from jaxbp.check._compare import dot
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64


def _unit(v, ok):
  """Traced: ``v`` in float64, zero where ``ok`` is False, scaled to unit length."""
  v = jnp.where(ok, v.astype(jnp.float64), 0.0)
  return v / jnp.maximum(jnp.linalg.norm(v), 1e-300)


@jax.jit
def _dot_unit(ct, v, ok):
  """``⟨ct, v/‖v‖⟩`` on the device, in float64, the direction made exactly as ``_compiled`` made it."""
  return jnp.vdot(jnp.where(ok, ct, 0.0), _unit(v, ok))


@jax.jit
def _masked_norm(ct, ok):
  return jnp.linalg.norm(jnp.where(ok, ct, 0.0))


def check(m) -> list[Entry]:
  grow = 1 if all(x.dtype == np.float64 for x in m.x) else 3  # float64 copies and their differences
  need = grow * m.rule_bytes_estimate()
  if need > m.memory_limit:
    for label in m.labels:
      m.skipped.append(("finite_differences", label, f"float64 copies would take ~{need:,} bytes >"
                        f" the memory bound {m.memory_limit:,.0f}"))
    return []
  return compare(m, m.fd_manual)


def manual64(m):
  """The rule's VJP in float64 (inputs, cotangent and all)."""
  with jax.enable_x64(True):
    if m.large:  # one compiled program converting on the device: no host copy of a large input
      _ = m.masks  # measured before tracing: it reads values
      return list(jax.jit(lambda leaves, u: m.vjp(m.fn, *_in64(m, leaves, u)))(m.spec.leaves, m.u))
    leaves, x, u = _x64(m)
    return [f64(c) for c in m.vjp(m.fn, x, u, leaves)]


def _in64(m, leaves, u):
  """Traced: the leaves and the cotangent in float64 (u zero where the reference's output is NaN)."""
  leaves = [a.astype(jnp.float64) if is_float_array(a) else a for a in leaves]
  u = jax.tree.map(lambda a, ok: jnp.where(ok, a.astype(jnp.float64), 0.0), u,
                   jax.tree.unflatten(jax.tree.structure(u), m.masks[0]))
  return [leaves[i] for i in m.spec.diff], u, leaves


def _x64(m):
  leaves = [f64(a) if is_float_array(a) else a for a in m.spec.leaves]
  x = [jnp.asarray(leaves[i]) for i in m.spec.diff]
  u = jax.tree.map(lambda a, ok: jnp.asarray(np.where(ok, f64(a), 0.0)), m.u,
                   jax.tree.unflatten(jax.tree.structure(m.u), m.masks[0]))
  return leaves, x, u


def differences(m):
  """Per input, per direction: (v, the central difference ⟨u, Δf⟩/2h, its rounding-error bound)."""
  with jax.enable_x64(True):
    if m.large:
      return _compiled(m)
    leaves, x, u = _x64(m)
    f = jax.jit(m.spec.bind(m.fn, leaves))  # one compile for the 2·directions calls per input
    return [_input(m, f, x, u, k) for k in range(len(x))]


def _input(m, f, x, u, k):
  """Central differences of ``f`` along ``directions`` random unit directions (not where J·u is NaN)."""
  rows = []
  h = m.opts.fd_eps * max(1.0, float(np.max(np.abs(np.nan_to_num(f64(x[k]))), initial=0.0)))
  for _ in range(m.opts.directions):
    v = np.where(m.masks[1][k], m.rng.standard_normal(x[k].shape), 0.0)
    v /= max(float(np.linalg.norm(v)), 1e-300)
    xk = f64(x[k])  # the steps on the host: no eager operation to compile
    plus = f(*x[:k], xk + h * v, *x[k + 1:])
    minus = f(*x[:k], xk - h * v, *x[k + 1:])
    diff = jax.tree.map(lambda p, q: (f64(p) - f64(q)) / (2 * h), plus, minus)
    fd = dot(u, diff, m.masks[0])
    size = jax.tree.map(lambda p, q: np.abs(f64(p)) + np.abs(f64(q)), plus, minus)
    noise = np.finfo(np.float64).eps * dot(jax.tree.map(np.abs, u), size, m.masks[0]) / (2 * h)
    rows.append((v, fd, noise))
  return rows


def _compiled(m):
  """``differences`` for large inputs: per input, one compiled program (float64 inside) per direction."""
  def program(leaves, u, k, v, h):
    x, u, leaves = _in64(m, leaves, u)
    v = _unit(v, m.masks[1][k])
    f = m.spec.bind(m.fn, leaves)
    plus = f(*x[:k], x[k] + h * v, *x[k + 1:])
    minus = f(*x[:k], x[k] - h * v, *x[k + 1:])
    fd = sum(jnp.vdot(a, (p - q) / (2 * h)) for a, p, q in zip(*map(jax.tree.leaves, (u, plus, minus))))
    size = sum(jnp.vdot(jnp.abs(a), jnp.abs(p) + jnp.abs(q))
               for a, p, q in zip(*map(jax.tree.leaves, (u, plus, minus))))
    return fd, jnp.finfo(jnp.float64).eps * size / (2 * h)
  _ = m.masks  # measured before tracing: it reads values
  run = jax.jit(program, static_argnums=2)
  rows: list[list] = []
  for k, x in enumerate(m.x):
    h = m.opts.fd_eps * max(1.0, float(jnp.max(jnp.abs(jnp.nan_to_num(x)), initial=0.0)))
    rows.append([])
    for _ in range(m.opts.directions):
      v = m.draw(x)  # in the input's precision: a float32 input costs no float64 draw
      fd, noise = (float(a) for a in run(m.spec.leaves, m.u, k, v, h))
      rows[-1].append((v, fd, noise))
  return rows


def compare(m, ct64) -> list[Entry]:
  """Worst direction per input: ⟨Jᵀ·u, v⟩ against central differences of the rule's forward.

  The absolute tolerance grows by the rounding error of the differences, ε₆₄·Σ|u|·(|f₊| + |f₋|)/2h: a
  gradient smaller than that cannot be seen by finite differences (the other checks still see it).
  """
  return [_entry(m, k, ct) for k, ct in enumerate(ct64)]


def _entry(m, k, ct):
  if m.large:
    with jax.enable_x64(True):
      ok = jnp.asarray(m.masks[1][k])
      return _entry_on(m, k, lambda v: float(_dot_unit(ct, v, ok)), float(_masked_norm(ct, ok)))
  ok = m.masks[1][k]
  ct = np.where(ok, ct, 0.0) if not ok.all() else ct
  return _entry_on(m, k, lambda v: float(np.vdot(ct, v)), float(np.linalg.norm(ct)))


def _entry_on(m, k, manual_dot, ct_norm):
  worst, scale, noise, detail = 0.0, 0.0, 0.0, ""
  for v, fd, n in m.fd_data[k]:
    manual = manual_dot(v)
    err = abs(manual - fd) if np.isfinite(manual - fd) else np.inf
    scale, noise = max(scale, ct_norm, abs(fd)), max(noise, n)
    if err >= worst:
      worst, detail = err, f"⟨Jᵀ·u, v⟩ = {manual:.8g} from the rule, {fd:.8g} from finite differences"
  tol = (m.opts.fd_tol[0], m.opts.fd_tol[1] + noise)
  return entry("finite_differences", m.labels[k], "float64", worst, scale, tol, detail)
