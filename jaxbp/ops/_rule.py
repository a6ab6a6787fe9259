"""What every rule's third and fourth blocks share, written once: the ``custom_vjp`` core from ``_fwd`` and ``_bwd``.

A rule is four blocks (STYLE.md): the public op (docstring, validation), ``_<op>_fwd``, ``_<op>_bwd``,
and the core plus its registry entry. The core is always the same three lines, a ``custom_vjp``
function whose value is the forward's output and whose VJP is the backward; ``vjp_rule`` is those
lines, so each rule's file holds only what differs between rules.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax


def vjp_rule(op: Callable[..., Any], fwd: Callable[..., tuple[Any, Any]], bwd: Callable[..., tuple],
             nondiff_argnums: Sequence[int] = ()) -> Any:
  """The core ``_<op>`` of a rule: ``jax.custom_vjp`` with value ``fwd(*args)[0]`` and VJP ``bwd``.

  ``fwd :: args -> (out, residuals)``; ``bwd :: (*nondiff args, residuals, g) -> one cotangent per
  differentiable argument`` (``None`` for one without a gradient). ``nondiff_argnums`` are the
  positions of Python values (an axis, ``eps``, static shapes). The core is named ``_<op>``, the name
  the trace labels its node with (``_exp`` is drawn as ``exp``) and the one ``docs/gen_rules.py`` reads.
  """
  def core(*args):
    return fwd(*args)[0]

  core.__name__ = core.__qualname__ = f"_{op.__name__}"
  core.__doc__ = f"``{op.__name__}``'s rule: forward ``{fwd.__name__}``, backward ``{bwd.__name__}``."
  core.__module__ = op.__module__
  rule = jax.custom_vjp(core, nondiff_argnums=tuple(nondiff_argnums))
  rule.defvjp(fwd, bwd)
  return rule
