"""The options today's language models add to softmax cross-entropy, written once for the two rules that
take them (``softmax_cross_entropy`` and ``linear_softmax_cross_entropy``).

Per row, with raw logits z [V], s = c·tanh(z/c) (``softcap`` c; s = z without), lse = logsumexp(s),
p = softmax(s), a target t (one-hot of the label, or given probabilities) of mass m = Σ t, label smoothing ε
and z-loss weight ζ:

  L = ((1 − ε)·m + ε)·lse − (1 − ε)·Σ_j t_j·s_j − ε·mean_j s_j + ζ·lse²

which is torch's label smoothing (the target (1 − ε)·t + ε/V) plus PaLM's auxiliary z-loss. Its gradient:

  ∂L/∂s = ((1 − ε)·m + ε + 2ζ·lse)·p − (1 − ε)·t − ε/V,     ∂L/∂z = ∂L/∂s ∘ (1 − (s/c)²).

A row whose label equals ``ignore_index`` has L = 0 and no gradient; "mean" divides by the rows kept (torch's
choice: NaN when every row is ignored, with zero gradients).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.ops._util import static_number


class CEOptions(NamedTuple):
  """The static options of a cross-entropy rule (Python values, part of its ``nondiff_argnums``)."""
  ignore_index: int | None = None
  label_smoothing: float = 0.0
  z_loss: float = 0.0
  softcap: float | None = None


def ce_options(op: str, ignore_index: Any, label_smoothing: Any, z_loss: Any, softcap: Any) -> CEOptions:
  """The options validated, each error naming ``op`` and the argument."""
  if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
    raise TypeError(f"{op}: argument 'ignore_index' must be a Python int or None, got {ignore_index!r}")
  smoothing = static_number(op, "label_smoothing", label_smoothing, low=0.0)
  if smoothing > 1.0:
    raise ValueError(f"{op}: argument 'label_smoothing' must be in [0, 1], got {label_smoothing!r}")
  cap = None if softcap is None else static_number(op, "softcap", softcap, low=0.0)
  if cap == 0.0:
    raise ValueError(f"{op}: argument 'softcap' must be > 0 or None, got {softcap!r}")
  return CEOptions(ignore_index, smoothing, static_number(op, "z_loss", z_loss, low=0.0), cap)


def checkable_labels(labels: Any, opts: CEOptions) -> Any:
  """``labels`` with the ignored ones replaced by class 0, for the range check of ``class_labels``."""
  if opts.ignore_index is None or not hasattr(labels, "dtype") or not jnp.issubdtype(labels.dtype, jnp.integer):
    return labels
  return jnp.where(jnp.asarray(labels) == opts.ignore_index, 0, labels).astype(labels.dtype)


def kept(labels: jax.Array, opts: CEOptions) -> jax.Array | None:
  """Which rows count (bool, labels' shape): those whose label is not ``ignore_index``; None for all."""
  return None if opts.ignore_index is None else labels != opts.ignore_index


def softcapped(z: jax.Array, opts: CEOptions) -> jax.Array:
  """s = c·tanh(z/c) (Gemma 2's logit soft-capping), or z without a cap."""
  return z if opts.softcap is None else opts.softcap * jnp.tanh(z / opts.softcap)


def smoothed_loss(logz: jax.Array, t_dot_r: jax.Array, mass: Any, r: jax.Array, opts: CEOptions,
                  shift: Any = 0.0) -> jax.Array:
  """L per row (the module's formula), written in the logits shifted by each row's ``shift`` (its max):
  r = s − shift [..., V], logz = logsumexp(r), Σ t·r and the target's mass m. The shift cancels from every
  term but the z-loss's (which reads lse = shift + logz), so a row of logits near 3e38 still loses nothing
  to lse − s_y cancelling. ``r`` is read only for the smoothing term's mean."""
  eps = opts.label_smoothing
  loss = ((1 - eps) * mass + eps) * logz - (1 - eps) * t_dot_r
  if eps:
    loss = loss - eps * jnp.mean(r, axis=-1)
  if not opts.z_loss:
    return loss
  lse = shift + logz
  return loss + opts.z_loss * lse * lse


def dlogits(p: jax.Array, t: jax.Array, mass: Any, lse: jax.Array, s: jax.Array, opts: CEOptions) -> jax.Array:
  """∂L/∂z per row [..., V]: ((1 − ε)m + ε + 2ζ·lse)·p − (1 − ε)·t − ε/V, times 1 − (s/c)² under a cap."""
  eps = opts.label_smoothing
  coef = (1 - eps) * mass + eps + (2 * opts.z_loss * lse if opts.z_loss else 0.0)
  grad = (coef[..., None] if hasattr(coef, "ndim") else coef) * p - (1 - eps) * t - eps / p.shape[-1]
  return grad if opts.softcap is None else grad * (1 - (s / opts.softcap) ** 2)


def cross_entropy_ref(logits, labels, opts: CEOptions, reduction: str):
  """The plain-jnp reference both rules' references share: torch's formulas, differentiated by JAX."""
  s = softcapped(logits, opts)
  ls = jax.nn.log_softmax(s, axis=-1)
  eps, v = opts.label_smoothing, s.shape[-1]
  if jnp.issubdtype(jnp.result_type(labels), jnp.inexact):
    per_row = -jnp.sum(((1 - eps) * labels + eps / v) * ls, axis=-1)
  else:
    nll = -jnp.take_along_axis(ls, jnp.clip(labels, 0, v - 1)[..., None], axis=-1)[..., 0]
    per_row = (1 - eps) * nll - eps * jnp.mean(ls, axis=-1)
  per_row = per_row + opts.z_loss * jax.nn.logsumexp(s, axis=-1) ** 2
  keep = None if opts.ignore_index is None else labels != opts.ignore_index
  if keep is not None:
    per_row = jnp.where(keep, per_row, 0.0)
  if reduction == "mean":
    return jnp.sum(per_row) / (per_row.size if keep is None else jnp.sum(keep))
  return jnp.sum(per_row) if reduction == "sum" else per_row
