"""``check_vjp`` and ``check_jvp`` on bfloat16 or float16 inputs: the rule against the float64 truth.

A reference run in bfloat16 rounds at every step, and is often the less precise of the two (at a softmax
of 0.999 its cross-entropy loss and gradient are 100% off): comparing a rule with it compares rounding
with rounding. So when the coarsest differentiable input is bfloat16 or float16, every check that
compares the rule with its reference (``forward``, ``vjp``, ``jacobian``, ``transpose``, and
``check_jvp``'s ``jvp`` and ``vjp``) compares it instead with the truth: the reference's value on the same
inputs (and cotangent or tangent) upcast to float64 (float32 where an input is a PRNG key and x64 is
off: see ``width``). A value ``d`` passes when

    max|d − t| ≤ bound · max|t|,

``bound`` the rule's precision contract in bfloat16 (``jaxbp.ops.bf16_bound``: ε for a function not in
the registry); in float16, where no rule's bound is measured, the default one in float16's ε (two
roundings, 9.8e-4). The detail names the bound and the error of the reference run at the inputs' dtype.
"""

from collections.abc import Callable
import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.check import precision
from jaxbp.check._compare import Entry
from jaxbp.check._compare import array_entry
from jaxbp.check._compare import entry
from jaxbp.check._compare import f64

NARROW = (np.dtype(jnp.bfloat16), np.dtype(np.float16))


def narrow(checker: Any) -> bool:
  """Whether the checker's coarsest differentiable input is bfloat16 or float16: then the contract applies."""
  return np.dtype(checker.coarsest) in NARROW


def bound(checker: Any) -> tuple[str, float]:
  """The rule's name (as the registry knows it) and its bound at the checker's coarsest input dtype.

  The bounds are measured in bfloat16; float16's are not, so a float16 input gets the default bound (two
  roundings) in float16's ε, 9.8e-4, as an unmeasured rule does in bfloat16. One rule needs that already:
  linear_softmax_cross_entropy's dh at p = 0.999 is 6.7e-4 off in float16, one ulp at its largest entry."""
  name = next((n for n, r in ops.REGISTRY.items() if r.fn is checker.fn), None)
  label = name or "a rule not in the registry"
  if np.dtype(checker.coarsest) == np.dtype(jnp.bfloat16):
    return label, ops.bf16_bound(name or "")
  scale = float(jnp.finfo(checker.coarsest).eps) / float(jnp.finfo(jnp.bfloat16).eps)
  return f"{label}; float16: the default bound in its ε", ops.DEFAULT_BF16_BOUND * scale


def width(checker: Any) -> np.dtype:
  """The truth's dtype: float64, or float32 where an input is a PRNG key and x64 is off. ``jax.random``
  draws another stream with x64 on (dropout's mask is another mask), so that truth is computed as the
  rule runs, with x64 off, in float32: still far below a bfloat16 or float16 rounding."""
  keyed = any(jax.dtypes.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key)
              for a in checker.spec.leaves)
  x64 = jax.dtypes.canonicalize_dtype(np.float64) == np.float64
  return np.dtype(np.float32 if keyed and not x64 else np.float64)


def up(checker: Any, tree: Any) -> Any:
  """Every floating leaf of ``tree`` in the truth's dtype (call inside ``truth``)."""
  wide = width(checker)
  return jax.tree.map(lambda a: jnp.asarray(a, wide) if hasattr(a, "dtype")
                      and jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def wide_reference(checker: Any) -> Callable:
  """The reference bound to the checker's leaves upcast (pass-through floats too): call inside ``truth``."""
  return checker.spec.bind(checker.ref, up(checker, checker.spec.leaves))


def truth(checker: Any, key: Any, compute: Callable[[], Any]) -> Any:
  """``compute()`` run once per checker and ``key`` (with x64 on for a float64 truth), as float64 NumPy arrays."""
  found = checker.truths
  if key not in found:
    with jax.enable_x64(True) if width(checker) == np.float64 else contextlib.nullcontext():
      found[key] = jax.tree.map(f64, compute())
  return found[key]


def entries(check: str, checker: Any, labels: list, got: list, want: list, like: list,
            at_dtype: list | None = None) -> list[Entry]:
  """One entry per value: ``got[i]`` against the float64 truth ``want[i]``, with exactly the dtype and
  shape of ``like[i]``; ``at_dtype[i]``, the reference's value at the inputs' dtype, is named beside.
  NaN where the truth is NaN agrees, as in every check, and so does the infinity of a truth beyond the
  dtype's range (exp(12) in float16); NaN or an infinity elsewhere fails."""
  name, b = bound(checker)
  dtype, wide = np.dtype(checker.coarsest).name, width(checker).name
  found = []
  with np.errstate(invalid="ignore"):  # inf − inf where both are the same infinity: masked as agreement
    for i, (label, d, t, x) in enumerate(zip(labels, got, want, like)):
      if np.shape(d) != tuple(x.shape) or np.dtype(d.dtype) != np.dtype(x.dtype):
        found.append(array_entry(check, label, d, t, (b, 0.0), x.dtype, x.shape))
        continue
      d = f64(jnp.asarray(d, jnp.float32))
      t = np.where(np.abs(t) > float(jnp.finfo(x.dtype).max), np.copysign(np.inf, t), t)  # as the dtype rounds it
      diff = np.where((d == t) | (np.isnan(d) & np.isnan(t)), 0.0, np.abs(d - t))
      err = float(diff.max()) if diff.size and np.all(np.isfinite(diff)) else (np.inf if diff.size else 0.0)
      finite = np.abs(t[np.isfinite(t)])
      scale = float(finite.max()) if finite.size else 0.0
      ref = "" if at_dtype is None else (
          f"; the reference in {dtype}: {precision.relative_error(at_dtype[i], t)[0]:.2e}")
      detail = (f"{dtype} against the {wide} truth: max error {err / (scale or 1):.2e} of max|truth|, bound"
                f" {b:.1e} ({name}){ref}")
      found.append(entry(check, label, np.dtype(x.dtype).name, err, scale, (b, 0.0), detail))
  return found
