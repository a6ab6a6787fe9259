"""What every rule's third and fourth blocks share, written once: the ``custom_vjp`` core from ``_fwd`` and ``_bwd``.

A rule is four blocks (STYLE.md): the public op (docstring, validation), ``_<op>_fwd``, ``_<op>_bwd``,
and the core plus its registry entry. The core is always the same three lines, a ``custom_vjp``
function whose value is the forward's output and whose VJP is the backward; ``vjp_rule`` is those
lines, so each rule's file holds only what differs between rules.

Precision (DESIGN.md: a rule computes in float32 at least): on inputs of a dtype narrower than float32
(bfloat16, float16) the core runs ``_fwd`` and ``_bwd`` on the inputs upcast to float32 and rounds once at
the end: the output to the inputs' dtype, each cotangent to its primal's. A residual that is an input
itself is kept in the input's own dtype (no float32 copy of what the caller holds anyway); what the
forward computes (statistics, log-sum-exps, outputs kept for the backward) is kept in float32. On float32
and float64 inputs nothing changes.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp

NARROW = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))  # computed in float32 by every rule


def _narrow(a: Any) -> bool:
  return isinstance(a, jax.Array) and a.dtype in NARROW


def _up(a: Any) -> Any:
  return a.astype(jnp.float32) if _narrow(a) else a


def _round(ct: Any, like: Any) -> Any:
  """``ct`` (a cotangent pytree, or None) with each float leaf cast to the dtype of ``like``'s leaf."""
  if ct is None:
    return None
  return jax.tree.map(lambda c, m: c if m is None or c is None else c.astype(m.dtype), ct, like,
                      is_leaf=lambda x: x is None)


def at_least_float32(fwd: Callable[..., tuple[Any, Any]], bwd: Callable[..., tuple],
                     nondiff_argnums: Sequence[int] = ()) -> tuple[Callable, Callable]:
  """``fwd`` and ``bwd`` wrapped to compute in float32 on narrower float inputs (see the module)."""
  nondiff = frozenset(nondiff_argnums)

  def fwd32(*args):
    diff = [a for i, a in enumerate(args) if i not in nondiff]
    leaves = jax.tree.leaves(diff)
    if not any(_narrow(a) for a in leaves):
      return (lambda out, res: (out, (res, None)))(*fwd(*args))
    floats = [a.dtype for a in leaves if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)]
    target = jnp.result_type(*floats)
    up = [a if i in nondiff else jax.tree.map(_up, a) for i, a in enumerate(args)]
    originals = {id(u): a for u, a in zip(jax.tree.leaves(up), jax.tree.leaves(args)) if _narrow(a)}
    out, res = fwd(*up)
    out = jax.tree.map(lambda o: o.astype(target) if o.dtype == jnp.float32 else o, out)
    res = jax.tree.map(lambda r: originals.get(id(r), r), res)  # an input kept as a residual: its own dtype
    marks = tuple(jax.tree.map(lambda a: jnp.zeros((0,), a.dtype) if isinstance(a, jax.Array)
                               and jnp.issubdtype(a.dtype, jnp.floating) else None, a) for a in diff)
    return out, (res, marks)

  def bwd32(*args):
    *static, (res, marks), g = args
    if marks is None:
      return bwd(*static, res, g)
    cts = bwd(*static, jax.tree.map(_up, res), jax.tree.map(_up, g))
    return tuple(_round(ct, m) for ct, m in zip(cts, marks))

  return functools.wraps(fwd)(fwd32), functools.wraps(bwd)(bwd32)  # __wrapped__: the rule's own, for the docs


def vjp_rule(op: Callable[..., Any], fwd: Callable[..., tuple[Any, Any]], bwd: Callable[..., tuple],
             nondiff_argnums: Sequence[int] = ()) -> Any:
  """The core ``_<op>`` of a rule: ``jax.custom_vjp`` with value ``fwd(*args)[0]`` and VJP ``bwd``.

  ``fwd :: args -> (out, residuals)``; ``bwd :: (*nondiff args, residuals, g) -> one cotangent per
  differentiable argument`` (``None`` for one without a gradient). ``nondiff_argnums`` are the
  positions of Python values (an axis, ``eps``, static shapes). The core is named ``_<op>``, the name
  the trace labels its node with (``_exp`` is drawn as ``exp``) and the one ``docs/gen_rules.py`` reads.
  Both run in float32 at least (``at_least_float32``).
  """
  fwd32, bwd32 = at_least_float32(fwd, bwd, nondiff_argnums)

  def core(*args):
    return fwd32(*args)[0]

  core.__name__ = core.__qualname__ = f"_{op.__name__}"
  core.__doc__ = f"``{op.__name__}``'s rule: forward ``{fwd.__name__}``, backward ``{bwd.__name__}``."
  core.__module__ = op.__module__
  rule = jax.custom_vjp(core, nondiff_argnums=tuple(nondiff_argnums))
  rule.defvjp(fwd32, bwd32)
  return rule
