"""Losses (notes 000, 001, 002, 004): each returns per-sample losses reduced over the batch axis.

``reduction`` is "mean" (the default: the mean over the batch axis, axis 0), "sum" or "none" (one
loss per sample). Its cotangent is the same upstream gradient handed to every sample, divided by N
for "mean". Every rule's backward is the fused formula: softmax cross-entropy never builds the
softmax's Jacobian, and never takes the log of a computed softmax.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxbp.ops._cross_entropy import CEOptions
from jaxbp.ops._cross_entropy import ce_options
from jaxbp.ops._cross_entropy import checkable_labels
from jaxbp.ops._cross_entropy import cross_entropy_ref
from jaxbp.ops._cross_entropy import dlogits
from jaxbp.ops._cross_entropy import kept
from jaxbp.ops._cross_entropy import smoothed_loss
from jaxbp.ops._cross_entropy import softcapped
from jaxbp.ops._loss_samplers import CE_OPTIONS
from jaxbp.ops._loss_samplers import label_branches
from jaxbp.ops._loss_samplers import regression
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import class_labels
from jaxbp.ops._util import float_array
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import reduce_batch
from jaxbp.ops._util import require_reduction
from jaxbp.ops._util import same_shape
from jaxbp.ops._util import static_number


def _per_sample_scale(g, batch_shape, reduction, dtype, keep=None):
  """The cotangent of ``reduce_batch``: one upstream gradient per sample, shape ``batch_shape``. With
  ``keep`` (bool, ``batch_shape``), the cotangent of ``reduce_batch(..., keep)``: "mean" divides by the samples kept,
  and the others get 0."""
  if keep is None:
    n = int(np.prod(batch_shape))
    g = g / max(n, 1) if reduction == "mean" else g
    return jnp.broadcast_to(g, batch_shape).astype(dtype)
  g = g / jnp.sum(keep).astype(dtype) if reduction == "mean" else g
  return jnp.where(keep, jnp.broadcast_to(g, batch_shape).astype(dtype), 0)


def _reduce_ref(per_sample, reduction):
  """The references' reduction, written independently of ``reduce_batch``."""
  return {"mean": jnp.mean, "sum": jnp.sum, "none": lambda a: a}[reduction](per_sample)


def _expand(s, ndim):
  """Per-sample values [N] (or []) reshaped to broadcast against an array of rank ``ndim``."""
  return s.reshape(s.shape + (1,) * (ndim - s.ndim))


# Every path of the regression losses: each reduction over [N, D] with D > 1, one feature, a scalar,
# rank 3, a batch of one, and an empty batch (whose mean is NaN, as jnp.mean's).
_REGRESSION = mixed_dtypes({
    **{f"[N, D] {r}": regression((3, 2), (r,)) for r in ("mean", "sum", "none")},
    "[N]": regression((4,)),
    "scalar": regression(()),
    **{f"[N, T, D] {r}": regression((2, 3, 2), (r,)) for r in ("mean", "none")},
    "batch of one, mean": regression((1, 3), ("mean",)),
    "N = 0": regression((0, 2)),
})


# ------------------------------------------------------------------------------------- squared_error

def squared_error(pred: ArrayLike, target: ArrayLike, reduction: str = "mean") -> jax.Array:
  """E = ½ Σ_features (pred − target)² per sample, reduced over the batch.  (Notes 000, 004.)

  Axis 0 is the batch; the per-sample loss sums over every other axis (a 1-D input is N samples of
  one feature, a 0-d input one sample). Local gradient: ∂E/∂pred = pred − target (note 000's first
  link, O − t), ∂E/∂target = −(pred − target). VJP: each scaled by the sample's upstream gradient.

  Args:
    pred: float array [N, ...] (or []).
    target: float array of the same shape.
    reduction: "mean" over N, "sum", or "none" for the [N] per-sample losses.
  """
  pred, target = float_arrays("squared_error", pred=pred, target=target)
  same_shape("squared_error", pred, target)
  require_reduction("squared_error", reduction)
  return _squared_error(pred, target, reduction, (pred.dtype, target.dtype))


def _squared_error_fwd(pred, target, reduction, dtypes):
  diff = pred - target
  per_sample = 0.5 * jnp.sum(diff * diff, axis=tuple(range(1, diff.ndim)))
  return reduce_batch(per_sample, reduction), diff  # keeps pred − target only


def _squared_error_bwd(reduction, dtypes, diff, g):
  scale = _per_sample_scale(g, diff.shape[:1], reduction, diff.dtype)
  dpred = _expand(scale, diff.ndim) * diff
  return dpred.astype(dtypes[0]), (-dpred).astype(dtypes[1])  # each input's own dtype


def _squared_error_ref(pred, target, reduction="mean"):
  per_sample = 0.5 * jnp.sum((pred - target) ** 2, axis=tuple(range(1, jnp.ndim(pred))))
  return _reduce_ref(per_sample, reduction)


_squared_error = vjp_rule(squared_error, _squared_error_fwd, _squared_error_bwd, nondiff_argnums=(2, 3))
register(squared_error, _squared_error_ref, any_branch(_REGRESSION), branches=_REGRESSION, note="000, 004")


# ----------------------------------------------------------------------------------------------- mse

def mse(pred: ArrayLike, target: ArrayLike, reduction: str = "mean") -> jax.Array:
  """Mean squared error like ``torch.nn.functional.mse_loss``: the mean of (pred − target)².  (Note 000.)

  Unlike the other losses, "mean" averages over every element (as PyTorch does, note 000's
  ``F.mse_loss``), "sum" adds every element, "none" returns the elementwise squares. Local gradient:
  ∂/∂pred = 2(pred − target)/K for K elements under "mean"; ∂/∂target is its negative.
  VJP: dpred = g · 2(pred − target)/K, dtarget = −dpred.

  Args:
    pred: float array of any shape.
    target: float array of the same shape.
    reduction: "mean", "sum" or "none".
  """
  pred, target = float_arrays("mse", pred=pred, target=target)
  same_shape("mse", pred, target)
  require_reduction("mse", reduction)
  return _mse(pred, target, reduction, (pred.dtype, target.dtype))


def _mse_fwd(pred, target, reduction, dtypes):
  diff = pred - target
  return reduce_batch(diff * diff, reduction), diff  # each element counts as a sample, as in PyTorch


def _mse_bwd(reduction, dtypes, diff, g):
  dpred = 2 * _per_sample_scale(g, diff.shape, reduction, diff.dtype) * diff
  return dpred.astype(dtypes[0]), (-dpred).astype(dtypes[1])  # each input's own dtype


def _mse_ref(pred, target, reduction="mean"):
  sq = (pred - target) ** 2
  return _reduce_ref(sq, reduction)


_mse = vjp_rule(mse, _mse_fwd, _mse_bwd, nondiff_argnums=(2, 3))
register(mse, _mse_ref, any_branch(_REGRESSION), branches=_REGRESSION, note="000")


# ----------------------------------------------------------------------------- softmax_cross_entropy

def _nan_where_invalid(values, labels, num_classes, ignore_index=None):
  """NaN for a sample whose integer label lies outside [0, num_classes) (and is not ``ignore_index``):
  under ``jit`` the label's value cannot be checked, and a NaN loss (and gradient) stops training where
  a wrong number would not. ``values`` is [...] per sample or [..., C] per sample and class."""
  valid = (labels >= 0) & (labels < num_classes)
  if ignore_index is not None:
    valid = valid | (labels == ignore_index)
  return jnp.where(valid.reshape(valid.shape + (1,) * (values.ndim - valid.ndim)), values, jnp.nan)


# ----------------------------------------------------------------------------- softmax_cross_entropy

def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: str = "mean", *,
                          ignore_index: int | None = None, label_smoothing: float = 0.0, z_loss: float = 0.0,
                          softcap: float | None = None) -> jax.Array:
  """Cross-entropy of softmax(logits) against labels, fused.  (Notes 001, 004.)

  Per sample: L = −Σⱼ pⱼ · log_softmax(z)ⱼ with p the one-hot of an integer label (so L =
  logsumexp(z) − z_y) or a given probability vector. log_softmax uses log-sum-exp with the max
  subtracted, so a probability that underflows to 0 still gives a finite loss and gradient.
  Local gradients: ∂L/∂z = (Σⱼ pⱼ) softmax(z) − p (= softmax(z) − onehot(y)), ∂L/∂p = −log_softmax(z).
  VJP: dz = g · ((Σⱼ pⱼ) softmax(z) − p), dp = −g · log_softmax(z), g per sample.

  The options of language-model training (``jaxbp/ops/_cross_entropy.py`` writes their formula once):
  ``softcap`` c replaces z by s = c·tanh(z/c) (the chain rule adds the factor 1 − (s/c)²);
  ``label_smoothing`` ε replaces p by (1 − ε)·p + ε/C (torch's definition); ``z_loss`` ζ adds
  ζ·logsumexp(s)² (PaLM), whose gradient adds 2ζ·logsumexp(s)·softmax(s); ``ignore_index`` gives the
  samples with that integer label no loss and no gradient, and "mean" divides by the samples kept (NaN
  when none is, as torch). With all four: dz = g·(((1 − ε)Σp + ε + 2ζ·lse)·softmax(s) − (1 − ε)p − ε/C)
  ∘ (1 − (s/c)²), dp = −g·(1 − ε)·log_softmax(s).

  Residuals: the logits (the caller's own array) and one log-sum-exp per sample, besides the labels:
  log_softmax(s) = s − lse is recomputed in the backward, in float32 at least (a bfloat16 input keeps
  no [..., C] buffer of its own, and its gradient is formed in float32 and rounded once).

  Out-of-range integer labels (other than ``ignore_index``) raise ValueError when concrete; under
  ``jit``, where they cannot be seen, that sample's loss and gradient row are NaN rather than a
  silently wrong number.

  Args:
    logits: float array [..., C] (usually [N, C]).
    labels: int array [...] of class indices in [0, C), or float array [..., C] of probabilities.
    reduction: "mean" over the samples, "sum", or "none".
    ignore_index: Python int or None; samples with this integer label are left out (int labels only).
    label_smoothing: Python float ε in [0, 1].
    z_loss: Python float ζ ≥ 0, the weight of logsumexp².
    softcap: Python float c > 0, or None for no cap.
  """
  op = "softmax_cross_entropy"
  logits = float_array(op, "logits", logits)
  opts = ce_options(op, ignore_index, label_smoothing, z_loss, softcap)
  checked, probs = class_labels(op, logits, checkable_labels(labels, opts), allow_probabilities=True)
  if probs and ignore_index is not None:
    raise ValueError(f"{op}: argument 'ignore_index' needs integer labels, got probabilities")
  require_reduction(op, reduction)
  labels = checked if probs or ignore_index is None else jnp.asarray(labels)
  return _softmax_cross_entropy(logits, labels, reduction, probs, opts)


def _targets(labels, num_classes, probs, dtype):
  return labels.astype(dtype) if probs else jax.nn.one_hot(labels, num_classes, dtype=dtype)


class _SCEResiduals(NamedTuple):
  logits: jax.Array  # [..., C] the input (held by the caller): s and log_softmax(s) = (s − m) − logz recomputed
  labels: jax.Array  # [...] int, or [..., C] probabilities
  m: jax.Array       # [...] max_j s_j per sample, float32 at least (the shift: exact log_softmax at huge logits)
  logz: jax.Array    # [...] logsumexp(s − m) per sample


def _shifted(logits, opts, dtype):
  """s = softcap(logits) in ``dtype``, each row's max m and r = s − m."""
  s = softcapped(logits.astype(dtype), opts)
  m = jnp.max(s, axis=-1, initial=-jnp.inf)
  return s, m, s - m[..., None]


def _softmax_cross_entropy_fwd(logits, labels, reduction, probs, opts):
  s, m, r = _shifted(logits, opts, jnp.promote_types(logits.dtype, jnp.float32))
  logz = jnp.log(jnp.sum(jnp.exp(r), axis=-1))
  t = _targets(labels, s.shape[-1], probs, s.dtype)
  per_sample = smoothed_loss(logz, jnp.sum(t * r, axis=-1), jnp.sum(t, axis=-1), r, opts, m)
  keep = kept(labels, opts)
  per_sample = per_sample if keep is None else jnp.where(keep, per_sample, 0)
  if not probs:
    per_sample = _nan_where_invalid(per_sample, labels, s.shape[-1], opts.ignore_index)
  return (reduce_batch(per_sample, reduction, keep).astype(logits.dtype),
          _SCEResiduals(logits, labels, m, logz))


def _softmax_cross_entropy_bwd(reduction, probs, opts, res, g):
  logits, labels, m, logz = res
  s, _, r = _shifted(logits, opts, logz.dtype)
  ls = r - logz[..., None]                                         # log_softmax(s), recomputed
  t = _targets(labels, s.shape[-1], probs, s.dtype)
  keep = kept(labels, opts)
  scale = _per_sample_scale(g, s.shape[:-1], reduction, s.dtype, keep)[..., None]
  dz = scale * dlogits(jnp.exp(ls), t, jnp.sum(t, axis=-1), m + logz, s, opts)
  if not probs:
    dz = _nan_where_invalid(dz, labels, s.shape[-1], opts.ignore_index)
  dlabels = (-scale * (1 - opts.label_smoothing) * ls).astype(labels.dtype) if probs else None
  return dz.astype(logits.dtype), dlabels


def _softmax_cross_entropy_ref(logits, labels, reduction="mean", *, ignore_index=None, label_smoothing=0.0,
                               z_loss=0.0, softcap=None):
  return cross_entropy_ref(logits, labels, CEOptions(ignore_index, label_smoothing, z_loss, softcap), reduction)


_SCE = mixed_dtypes({**label_branches(False), **label_branches(True), **CE_OPTIONS}, "probabilities, [N, C] mean",
                    arg=1)
_softmax_cross_entropy = vjp_rule(softmax_cross_entropy, _softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd,
                                  nondiff_argnums=(2, 3, 4))
register(softmax_cross_entropy, _softmax_cross_entropy_ref, any_branch(_SCE), branches=_SCE, note="001, 004")


# ---------------------------------------------------------------------------------- multiclass_hinge

def multiclass_hinge(scores: ArrayLike, labels: ArrayLike, margin: float = 1.0,
                     reduction: str = "mean") -> jax.Array:
  """Multiclass SVM loss Lᵢ = Σ_{j≠yᵢ} max(0, s_j − s_{yᵢ} + margin).  (Note 001, section 1.)

  Local gradient per sample: ∂L/∂s_j = 1[s_j − s_y + margin > 0] for j ≠ y, and
  ∂L/∂s_y = −Σ_{j≠y} 1[s_j − s_y + margin > 0]: every class that violates the margin pushes its own
  score down and the true class's score up. VJP: ds = g · ∂L/∂s per sample; labels get none.
  At the kink (s_j − s_y + margin exactly 0) the rule takes the subgradient 0, as relu does.
  Out-of-range labels raise ValueError when concrete; under ``jit`` that sample's loss and gradient
  row are NaN.

  Args:
    scores: float array [N, C] (or [..., C]).
    labels: int array [N] (or [...]) of class indices in [0, C).
    margin: Python float ≥ 0, the required gap Δ.
    reduction: "mean" over the samples, "sum", or "none".
  """
  scores = float_array("multiclass_hinge", "scores", scores)
  labels, _ = class_labels("multiclass_hinge", scores, labels, allow_probabilities=False)
  require_reduction("multiclass_hinge", reduction)
  margin = static_number("multiclass_hinge", "margin", margin, low=0.0)
  return _multiclass_hinge(scores, labels, margin, reduction)


def _multiclass_hinge_fwd(scores, labels, margin, reduction):
  onehot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
  true_score = jnp.sum(scores * onehot, axis=-1, keepdims=True)
  margins = jnp.where(onehot > 0, 0, scores - true_score + margin)
  per_sample = _nan_where_invalid(jnp.sum(jnp.maximum(margins, 0), axis=-1), labels, scores.shape[-1])
  violated = (margins > 0).astype(scores.dtype)
  local = violated - onehot * jnp.sum(violated, axis=-1, keepdims=True)
  local = _nan_where_invalid(local, labels, scores.shape[-1])
  return reduce_batch(per_sample, reduction), local  # ∂Lᵢ/∂s, one row per sample: all the backward needs


def _multiclass_hinge_bwd(margin, reduction, local, g):
  scale = _per_sample_scale(g, local.shape[:-1], reduction, local.dtype)[..., None]
  return scale * local, None


def _multiclass_hinge_ref(scores, labels, margin=1.0, reduction="mean"):
  true_score = jnp.take_along_axis(scores, labels[..., None], axis=-1)
  margins = jnp.maximum(0, scores - true_score + margin)
  per_sample = jnp.sum(margins, axis=-1) - margin  # the j = y term is max(0, margin) = margin
  return _reduce_ref(per_sample, reduction)


def _away_from_kinks(sample):
  """Hinge inputs from ``sample`` (int labels), redrawn until no margin sits within 0.05 of its kink."""
  def sample_hinge(rng, dtype):
    for _ in range(100):
      (scores, labels), kw = sample(rng, dtype)
      margin = float(rng.choice([1.0, 0.5]))
      gaps = scores - np.take_along_axis(scores, labels[..., None], axis=-1) + margin
      np.put_along_axis(gaps, labels[..., None], 1.0, axis=-1)
      if gaps.size == 0 or np.abs(gaps).min() > 0.05:
        break
    return (scores, labels), {"margin": margin, **kw}
  return sample_hinge


_HINGE = {name: _away_from_kinks(sample) for name, sample in label_branches(False).items()}
_multiclass_hinge = vjp_rule(multiclass_hinge, _multiclass_hinge_fwd, _multiclass_hinge_bwd, nondiff_argnums=(2, 3))
register(multiclass_hinge, _multiclass_hinge_ref, any_branch(_HINGE), branches=_HINGE, note="001")


# -------------------------------------------------------------------------------------- l2_penalty

def l2_penalty(tree: Any, lam: ArrayLike) -> jax.Array:
  """R = λ/2 · Σ ‖W‖² over every array leaf of ``tree``.  (Note 001, section 6.2.)

  Local gradients: ∂R/∂W = λW for every leaf (L2 regularisation is weight decay: the total gradient
  is ∂L_data/∂W + λW) and ∂R/∂λ = ½ Σ ‖W‖². VJP: dW = g·λW, dλ = g·½ Σ ‖W‖².
  Pass the subtree to penalise (often the weights only).

  Args:
    tree: a pytree whose leaves are float arrays.
    lam: the strength λ, a float scalar (Python float or 0-d array).
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  arrays = [float_array("l2_penalty", f"tree{jax.tree_util.keystr(path)}", leaf) for path, leaf in leaves]
  lam = float_array("l2_penalty", "lam", lam)
  if lam.ndim != 0:
    raise ValueError(f"l2_penalty: argument 'lam' must be a scalar, got shape {lam.shape}")
  dtype = jnp.result_type(*arrays) if arrays else lam.dtype
  tree = jax.tree_util.tree_unflatten(treedef, arrays)
  return _l2_penalty(tree, lam.astype(dtype))  # the penalty takes the weights' dtype


def _sum_squares(tree):
  return sum(jnp.sum(leaf * leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _l2_penalty_fwd(tree, lam):
  return 0.5 * lam * _sum_squares(tree), (tree, lam)


def _l2_penalty_bwd(res, g):
  tree, lam = res
  dtree = jax.tree_util.tree_map(lambda w: (g * lam * w).astype(w.dtype), tree)
  dlam = g * 0.5 * _sum_squares(tree)
  return dtree, dlam.astype(lam.dtype)


def _l2_penalty_ref(tree, lam):
  return lam / 2 * sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(tree))


def _l2_sampler(shapes):
  def sample(rng, dtype):
    tree = {"w1": uniform(rng, shapes[0], dtype), "b1": uniform(rng, shapes[1], dtype),
            "layers": [uniform(rng, s, dtype) for s in shapes[2:]]}
    return (tree, np.asarray(rng.uniform(0.1, 1.0), dtype=dtype)), {}
  return sample


_TREES = mixed_dtypes({
    "nested tree": _l2_sampler([(2, 3), (3,), (2, 2)]),
    "an empty leaf": _l2_sampler([(0, 3), (3,)]),
}, arg=1)
_l2_penalty = vjp_rule(l2_penalty, _l2_penalty_fwd, _l2_penalty_bwd)
register(l2_penalty, _l2_penalty_ref, any_branch(_TREES), branches=_TREES, note="001")
