"""Fused linear distillation (Liger-Kernel's): a divergence between two softmaxes of h·W without [N, V] logits."""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxbp.ops._loss_samplers import ignored
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._util import REDUCTIONS
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import int_array
from jaxbp.ops._util import reduce_batch
from jaxbp.ops._util import static_number
from jaxbp.ops.linear_cross_entropy import _check_linear_ce
from jaxbp.ops.linear_cross_entropy import _chunked

DIVERGENCES = ("kl", "reverse_kl", "jsd")


class _Distill(NamedTuple):
  """The static part: the row chunks (``_check_linear_ce``'s) and the divergence's parameters."""
  chunks: Any
  divergence: str
  beta: float
  temperature: float
  ignore_index: int | None


def linear_distillation_loss(h: ArrayLike, w: ArrayLike, h_teacher: ArrayLike, w_teacher: ArrayLike, *,
                             labels: ArrayLike | None = None, divergence: str = "kl", beta: float = 0.5,
                             temperature: float = 1.0, ignore_index: int | None = None,
                             chunk_size: int | None = None, reduction: str = "mean") -> jax.Array:
  """D(P ‖ Q) per row between the teacher's P = softmax(h_t·W_t/τ) and the student's Q = softmax(h·W/τ).  (Note 001.)

  Per row, with log q = log_softmax(h·W/τ), log p = log_softmax(h_t·W_t/τ) (computed chunk by chunk of
  rows in float32 at least; neither [N, V] matrix ever exists):
  "kl": L = KL(P‖Q) = Σ p·(log p − log q); "reverse_kl": L = KL(Q‖P) = Σ q·(log q − log p); "jsd":
  L = β·KL(P‖M) + (1 − β)·KL(Q‖M), M = β·P + (1 − β)·Q (Liger-Kernel's generalised JSD; log M formed
  as logaddexp(log β + log p, log(1 − β) + log q), so an underflowing p or q costs nothing).

  Local gradient with respect to the student's scaled logits z = h·W/τ, through softmax's Jacobian
  diag(q) − q·qᵀ applied to ∂L/∂q: "kl": G = q − p; "reverse_kl": G = q ∘ (a − Σ q·a), a = log q − log p;
  "jsd": G = (1 − β)·q ∘ (a − Σ q·a), a = log q − log M (since ∂L/∂q = (1 − β)(log q − log M)).
  VJP, with g_n the upstream gradient of row n (g / rows kept under "mean", g under "sum", 0 for a row
  whose label is ``ignore_index``): dh = (g ∘ G)·Wᵀ/τ, dW = hᵀ·(g ∘ G)/τ. The teacher is a constant:
  its arguments get zero cotangents (as ``stop_gradient`` would give), and no τ² factor is applied.

  Residuals and chunks as ``linear_softmax_cross_entropy``'s: under "mean" and "sum" the forward forms
  each chunk's G and adds its share to dh and dW (residuals the sizes of h and W); under "none" the
  forward keeps the four inputs and the backward recomputes each chunk's logits.

  Args:
    h: float array [N, D], the student's hidden states.
    w: float array [D, V], the student's output projection; same dtype as h.
    h_teacher: float array [N, D_t], the teacher's hidden states.
    w_teacher: float array [D_t, V], the teacher's output projection; same dtype as h_teacher.
    labels: optional int array [N]; only read to find the rows whose label is ``ignore_index``.
    divergence: "kl" (KL(teacher ‖ student)), "reverse_kl" (KL(student ‖ teacher)) or "jsd".
    beta: Python float in (0, 1), the JSD's weight of the teacher (read only by "jsd").
    temperature: Python float τ > 0 dividing both sets of logits.
    ignore_index: Python int or None; rows whose label equals it get no loss and no gradient (needs labels).
    chunk_size: Python int ≥ 1, rows per chunk; None for max(256, N·D // V) (capped at N).
    reduction: "mean" over the rows kept, "sum", or "none" for the [N] per-row divergences.

  Returns:
    The loss (a scalar, or [N] for "none") of h's dtype.

  Note: 001 (the chain rule through softmax); Liger-Kernel's fused linear JSD (Hsu et al. 2024).
  """
  op = "linear_distillation_loss"
  h, w = float_arrays(op, h=h, w=w)
  h_teacher, w_teacher = float_arrays(op, h_teacher=h_teacher, w_teacher=w_teacher)
  chunks = _check_linear_ce(h, w, chunk_size, reduction, op)
  if h_teacher.ndim != 2 or w_teacher.ndim != 2 or h_teacher.shape[1] != w_teacher.shape[0] \
      or h_teacher.shape[0] != h.shape[0] or w_teacher.shape[1] != w.shape[1]:
    raise ValueError(f"{op}: arguments 'h_teacher' [N, D_t] and 'w_teacher' [D_t, V] must fit h {h.shape} and "
                     f"w {w.shape}, got {h_teacher.shape} and {w_teacher.shape}")
  divergence, beta, temperature, ignore_index = _check_divergence(op, divergence, beta, temperature,
                                                                  ignore_index, labels)
  static = _Distill(chunks, divergence, beta, temperature, ignore_index)
  labels = jnp.zeros((h.shape[0],), jnp.int32) if labels is None else int_array(op, "labels", labels)
  if labels.shape != (h.shape[0],):
    raise ValueError(f"{op}: argument 'labels' must have shape {(h.shape[0],)}, got {labels.shape}")
  return _linear_distillation_loss(h, w, h_teacher, w_teacher, labels, static)


def _check_divergence(op, divergence, beta, temperature, ignore_index, labels):
  if not isinstance(divergence, str) or divergence not in DIVERGENCES:
    raise ValueError(f"{op}: argument 'divergence' must be one of {DIVERGENCES}, got {divergence!r}")
  beta = static_number(op, "beta", beta, low=0.0)
  if divergence == "jsd" and not 0.0 < beta < 1.0:
    raise ValueError(f"{op}: argument 'beta' must be in (0, 1) for 'jsd' (its ends are 'kl' and 'reverse_kl' "
                     f"up to a factor), got {beta!r}")
  temperature = static_number(op, "temperature", temperature, low=0.0)
  if temperature == 0.0:
    raise ValueError(f"{op}: argument 'temperature' must be > 0, got {temperature!r}")
  if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
    raise TypeError(f"{op}: argument 'ignore_index' must be a Python int or None, got {ignore_index!r}")
  if ignore_index is not None and labels is None:
    raise ValueError(f"{op}: argument 'ignore_index' needs 'labels' (the rows to leave out are read from them)")
  return divergence, beta, temperature, ignore_index


def _divergence_and_grad(z, zt, st):
  """Per-row divergence [rows] and G = ∂L/∂z [rows, V] from the student's and teacher's scaled logits."""
  lq, lp = jax.nn.log_softmax(z, axis=-1), jax.nn.log_softmax(zt, axis=-1)
  q, p = jnp.exp(lq), jnp.exp(lp)
  if st.divergence == "kl":
    return jnp.sum(p * (lp - lq), axis=-1), q - p                               # G = q − p
  if st.divergence == "reverse_kl":
    a = lq - lp
    loss = jnp.sum(q * a, axis=-1)
    return loss, q * (a - loss[:, None])                                        # G = q ∘ (a − Σ q·a)
  lm = jnp.logaddexp(math.log(st.beta) + lp, math.log1p(-st.beta) + lq)        # log M
  a = lq - lm
  kl_qm = jnp.sum(q * a, axis=-1)
  loss = st.beta * jnp.sum(p * (lp - lm), axis=-1) + (1 - st.beta) * kl_qm
  return loss, (1 - st.beta) * q * (a - kl_qm[:, None])                        # G = (1 − β) q ∘ (a − Σ q·a)


def _kept(labels, st):
  return None if st.ignore_index is None else labels != st.ignore_index


@functools.partial(jax.jit, static_argnums=(5, 6))
def _pass(h, w, h_t, w_t, labels, st, grads, row_scale=None):
  """One pass over the row chunks: per-row losses [N] and, with ``grads``, dh = (s ∘ G)·Wᵀ/τ and
  dW = hᵀ·(s ∘ G)/τ, s = ``row_scale`` (or 1), 0 for ignored and padding rows."""
  chunks, dt = st.chunks, jnp.promote_types(h.dtype, jnp.float32)
  scale = jnp.ones((chunks.n,), dt) if row_scale is None else row_scale.astype(dt)
  keep = _kept(labels, st)
  scale = scale if keep is None else jnp.where(keep, scale, 0)

  def chunk(dw, x):
    h_c, ht_c, s_c = x
    z = jnp.matmul(h_c, w, preferred_element_type=dt) / st.temperature
    zt = jnp.matmul(ht_c, w_t, preferred_element_type=jnp.promote_types(h_t.dtype, dt)).astype(dt) / st.temperature
    loss, g_z = _divergence_and_grad(z, zt, st)
    if not grads:
      return dw, (loss, None)
    grad = g_z * (s_c / st.temperature)[:, None]                                # s ∘ G / τ
    dw = dw + jnp.matmul(h_c.T.astype(dt), grad)                                # dW += hᵀ·(s ∘ G)/τ
    return dw, (loss, jnp.matmul(grad, w.T.astype(dt)))                         # dh = (s ∘ G)·Wᵀ/τ

  xs = (_chunked(chunks, h), _chunked(chunks, h_t), _chunked(chunks, scale))
  dw, (loss, dh) = jax.lax.scan(chunk, jnp.zeros(w.shape, dt) if grads else None, xs)
  loss = loss.reshape(-1)[:chunks.n]
  loss = loss if keep is None else jnp.where(keep, loss, 0)
  if not grads:
    return loss, None, None
  return loss, dh.reshape(-1, h.shape[1])[:chunks.n], dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _linear_distillation_loss(h, w, h_t, w_t, labels, st):
  """A plain evaluation: the loss only (NOT ``_fwd(...)[0]``, which would also form the gradients)."""
  loss = _pass(h, w, h_t, w_t, labels, st, False)[0]
  return reduce_batch(loss, st.chunks.reduction, _kept(labels, st)).astype(h.dtype)


class _Gradients(NamedTuple):
  dh: jax.Array         # [N, D] ∂(Σ_n L_n)/∂h, formed in the forward (float32 at least, rounded once in _bwd)
  dw: jax.Array         # [D, V] ∂(Σ_n L_n)/∂W, formed in the forward (float32 at least)
  kept_rows: jax.Array  # [] the rows kept: "mean"'s divisor


class _Recompute(NamedTuple):
  inputs: tuple  # (h, w, h_t, w_t, labels): the logits are recomputed chunk by chunk in the backward


def _linear_distillation_loss_fwd(h, w, h_t, w_t, labels, st):
  reduction, keep = st.chunks.reduction, _kept(labels, st)
  if reduction == "none":
    loss = _pass(h, w, h_t, w_t, labels, st, False)[0]
    return loss.astype(h.dtype), _Recompute((h, w, h_t, w_t, labels))
  loss, dh, dw = _pass(h, w, h_t, w_t, labels, st, True)
  kept_rows = jnp.asarray(st.chunks.n if keep is None else jnp.sum(keep), dw.dtype)
  return reduce_batch(loss, reduction, keep).astype(h.dtype), _Gradients(dh, dw, kept_rows)  # rounded once, in _bwd


def _linear_distillation_loss_bwd(st, res, g):
  if st.chunks.reduction == "none":
    h, w, h_t, w_t, labels = res.inputs
    _, dh, dw = _pass(h, w, h_t, w_t, labels, st, True, g)
    dh, dw = dh.astype(h.dtype), dw.astype(w.dtype)
  else:  # the cotangent of the reduction; with no row kept, dh = dW = 0 (not 0/0)
    g32 = g.astype(res.dh.dtype)                                    # g is of h's (and W's) dtype
    scale = g32 / jnp.maximum(res.kept_rows, 1) if st.chunks.reduction == "mean" else g32
    dh, dw = (scale * res.dh).astype(g.dtype), (scale * res.dw).astype(g.dtype)
  return dh, dw, None, None, None  # the teacher is a constant: zero cotangents


_linear_distillation_loss.defvjp(_linear_distillation_loss_fwd, _linear_distillation_loss_bwd)


def _linear_distillation_loss_ref(h, w, h_teacher, w_teacher, *, labels=None, divergence="kl", beta=0.5,
                                  temperature=1.0, ignore_index=None, chunk_size=None, reduction="mean"):
  del chunk_size
  lq = jax.nn.log_softmax(h @ w / temperature, axis=-1)
  lp = jax.lax.stop_gradient(jax.nn.log_softmax(h_teacher @ w_teacher / temperature, axis=-1))
  q, p = jnp.exp(lq), jnp.exp(lp)
  if divergence == "kl":
    per_row = jnp.sum(p * (lp - lq), axis=-1)
  elif divergence == "reverse_kl":
    per_row = jnp.sum(q * (lq - lp), axis=-1)
  else:
    lm = jnp.log(beta * p + (1 - beta) * q)
    per_row = beta * jnp.sum(p * (lp - lm), axis=-1) + (1 - beta) * jnp.sum(q * (lq - lm), axis=-1)
  keep = jnp.ones(per_row.shape, bool) if ignore_index is None else labels != ignore_index
  per_row = jnp.where(keep, per_row, 0.0)
  if reduction == "mean":
    out = jnp.sum(per_row) / jnp.sum(keep)
  else:
    out = jnp.sum(per_row) if reduction == "sum" else per_row
  return out.astype(h.dtype)  # the rule's dtype: h's, whatever the teacher's


def _distill_sampler(divergences, reductions, chunk_sizes=(None, 2, 3), n=(1, 6), ignore=0.0, dt=(1, 3)):
  """Student (h [N, D], W [D, V]) and, as keywords, the teacher (h_t [N, D_t], W_t [D_t, V]): a constant to
  the checks, as to the rule (its zero cotangents are tested in tests/ops/test_distillation.py). τ and β
  drawn; with ``ignore`` > 0, ignore_index −100 on that fraction of the rows ("first 2": the first two)."""
  def sample(rng, dtype):
    rows, d, d_t, v = (int(rng.integers(lo, hi + 1)) for lo, hi in (n, (1, 3), dt, (2, 5)))
    h, w, h_t, w_t = (uniform(rng, shape, dtype) for shape in ((rows, d), (d, v), (rows, d_t), (d_t, v)))
    kw = {"h_teacher": h_t, "w_teacher": w_t, "divergence": str(rng.choice(divergences)),
          "reduction": str(rng.choice(reductions)),
          "temperature": float(rng.choice([1.0, 2.0])), "beta": float(rng.choice([0.1, 0.5, 0.9])),
          "chunk_size": chunk_sizes[int(rng.integers(len(chunk_sizes)))]}
    if ignore:
      drop = ignored(rng, (rows,), ignore)
      kw["labels"], kw["ignore_index"] = np.where(drop, -100, rng.integers(0, v, size=rows)).astype(np.int32), -100
    return (h, w), kw
  return sample


_BRANCHES = {
    **{f"{div}, each reduction": _distill_sampler([div], REDUCTIONS) for div in DIVERGENCES},
    "mean, chunks that do not divide N": _distill_sampler(DIVERGENCES, ["mean"], (2, 3), n=(4, 7)),
    "ignore_index on some rows": _distill_sampler(DIVERGENCES, REDUCTIONS, (2, 3), n=(4, 7), ignore=0.5),
    "ignore_index on every row of the first chunk": _distill_sampler(DIVERGENCES, REDUCTIONS, (2,), n=(4, 6),
                                                                     ignore="first 2"),
    "ignore_index on every row (mean: NaN, zero gradients)": _distill_sampler(DIVERGENCES, REDUCTIONS, ignore=1.0),
    "one row, one chunk": _distill_sampler(DIVERGENCES, REDUCTIONS, (None, 4), n=(1, 1)),
    "D_t = 0 (a uniform teacher)": _distill_sampler(DIVERGENCES, REDUCTIONS, dt=(0, 0)),
    "N = 0 (no rows)": _distill_sampler(DIVERGENCES, REDUCTIONS, (None,), n=(0, 0)),
}

register(linear_distillation_loss, _linear_distillation_loss_ref, any_branch(_BRANCHES), branches=_BRANCHES,
         note="001; Liger-Kernel")
