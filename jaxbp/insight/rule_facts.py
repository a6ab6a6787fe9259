"""What the tensor page says about one node's rule: its VJP formula, the bytes it keeps, and its check.

Each fact is measured on the node's own inputs, when the page is made:

- ``formula``: the VJP as the rule's docstring writes it (``dX = dY·Wᵀ, dW = Xᵀ·dY``), read from the
  public op in ``jaxbp.ops``; a JAX primitive has JAX's own rule.
- ``residual_bytes``: the bytes the forward keeps for the backward (the leaves of ``jax.vjp``'s
  closure, as ``check_vjp``'s residual audit counts them), for the rule and for autodiff of its reference.
- ``check``: ``check_vjp`` of the rule against its reference at those inputs; a failure is kept, not hidden.

The reference is the registry's (``jaxbp.ops.reference``) when it takes the node's inputs and gives
the node's value, else the rule's forward code differentiated by JAX.
"""

import inspect
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_MAX_FORMULA = 360  # characters of the docstring shown


class RuleFacts(NamedTuple):
  """The facts of one manual node (see the module's docstring); ``check`` is None when not asked for."""
  formula: str
  rule_bytes: int | None
  autodiff_bytes: int | None
  check_passed: bool | None
  check_text: str


def formula(op: str) -> str:
  """The VJP paragraph of ``jaxbp.ops.<op>``'s docstring, from "VJP" on, at most ~360 characters."""
  import jaxbp.ops
  fn = getattr(jaxbp.ops, op, None)
  doc = inspect.getdoc(fn) if fn is not None and callable(fn) else None
  if not doc:
    return f"JAX's own rule for {op}"
  prose = doc.split("\nArgs:")[0]
  paragraphs = [" ".join(p.split()) for p in prose.split("\n\n")]
  for key in ("VJP", "∂L/∂", "Local"):
    found = [p for p in paragraphs if key in p]
    if found:
      text = found[0][found[0].index(key):] if key == "VJP" else found[0]
      return text if len(text) <= _MAX_FORMULA else text[:_MAX_FORMULA].rsplit(" ", 1)[0] + " …"
  return paragraphs[0]


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _single(fn):
  """A node's ``fn`` (which returns a list) as a function of one output, or a tuple of several."""
  def call(*args):
    outs = fn(*args)
    return outs[0] if len(outs) == 1 else tuple(outs)
  return call


def residual_bytes(fn, args) -> int | None:
  """Bytes ``jax.vjp(fn)`` keeps for the backward, differentiating every float argument; None if it cannot."""
  floats = [i for i, a in enumerate(args) if _is_float(a)]

  def of_floats(*xs):  # the other arguments (integer ids, labels) held fixed
    given = dict(zip(floats, xs))
    return fn(*(given.get(i, a) for i, a in enumerate(args)))

  try:
    pull = jax.eval_shape(lambda *xs: jax.vjp(of_floats, *xs)[1], *[args[i] for i in floats])
  except Exception:  # pylint: disable=broad-except  # a forward JAX cannot differentiate: no number
    return None
  leaves = [a for a in jax.tree.leaves(pull) if hasattr(a, "dtype")]
  return int(sum(np.prod(a.shape, dtype=np.int64) * np.dtype(a.dtype).itemsize for a in leaves))


def pair(node) -> tuple[Any, Any, bool]:
  """(rule, reference, public) for a manual node: the registry's public op and reference when they take
  the node's inputs and give its value (``public`` True: they retrace at any dtype), else the node's
  own equation and its forward code differentiated by JAX (fixed to the traced dtypes)."""
  from jaxbp.ops import REGISTRY
  entry = REGISTRY.get(node.op)
  if entry is not None:
    try:
      want = node.value  # the traced forward's output, already computed
      if all(_same(f(*node.args), want) for f in (entry.fn, entry.reference)):
        return entry.fn, entry.reference, True
    except Exception:  # pylint: disable=broad-except  # a signature of its own: use the equation
      pass
  return _single(node.fn), _single(node.plain), False


def _same(out, want) -> bool:
  got = list(out) if isinstance(out, (tuple, list)) else [out]
  return len(got) == len(want) and all(
      np.shape(g) == np.shape(w) and np.allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True)
      for g, w in zip(got, want))


def facts(node, check: bool = True) -> RuleFacts:
  """The ``RuleFacts`` of a manual node (a ``jaxbp.insight.trace.Node`` with ``manual`` True)."""
  rule, ref, public = pair(node)
  text, passed = "", None
  if check:
    passed, text = _check(rule, ref, node.args, public)
  return RuleFacts(formula(node.op), residual_bytes(rule, node.args), residual_bytes(ref, node.args),
                   passed, text)


def _check(rule, ref, args, public) -> tuple[bool, str]:
  """check_vjp's default checks; an equation fixed to its dtypes skips the float64 finite differences."""
  from jaxbp.check import DEFAULT_CHECKS
  from jaxbp.check import check_vjp
  checks = None if public else [c for c in DEFAULT_CHECKS if c != "finite_differences"]
  try:
    report = check_vjp(rule, ref, *args, checks=checks)
  except AssertionError as e:  # its message is the report
    return False, str(getattr(e, "report", e))
  except Exception as e:  # pylint: disable=broad-except  # shown on the page, never hidden
    return False, f"check_vjp could not run: {type(e).__name__}: {e}"
  return report.passed, str(report)


def summary(text: str) -> str:
  """The first line of a check's report (``check_vjp(...): all 9 checks passed``)."""
  return re.sub(r"\s+", " ", text.partition("\n")[0]).strip()
