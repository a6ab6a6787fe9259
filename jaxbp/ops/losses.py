"""Losses (notes 000, 001, 002, 004): each returns per-sample losses reduced over the batch axis.

``reduction`` is "mean" (the default: the mean over the batch axis, axis 0), "sum" or "none" (one
loss per sample). Its cotangent is the same upstream gradient handed to every sample, divided by N
for "mean". Every rule's backward is the fused formula: softmax cross-entropy never builds the
softmax's Jacobian, and never takes the log of a computed softmax.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops._registry import draw
from jaxbp.ops._registry import register
from jaxbp.ops._util import reduce_batch
from jaxbp.ops._util import require_float
from jaxbp.ops._util import require_floats
from jaxbp.ops._util import require_reduction
from jaxbp.ops.activations import _log_softmax_forward


def _per_sample_scale(g, batch_shape, reduction, dtype):
  """The cotangent of ``reduce_batch``: one upstream gradient per sample, shape ``batch_shape``."""
  n = int(np.prod(batch_shape))
  if reduction == "mean":
    g = g / max(n, 1)
  return jnp.broadcast_to(g, batch_shape).astype(dtype)


def _reduce_ref(per_sample, reduction):
  """The references' reduction, written independently of ``reduce_batch``."""
  return {"mean": jnp.mean, "sum": jnp.sum, "none": lambda a: a}[reduction](per_sample)


def _expand(s, ndim):
  """Per-sample values [N] (or []) reshaped to broadcast against an array of rank ``ndim``."""
  return s.reshape(s.shape + (1,) * (ndim - s.ndim))


def _check_same_shape(op, pred, target):
  if jnp.shape(pred) != jnp.shape(target):
    raise ValueError(f"{op}: 'pred' and 'target' must have the same shape (broadcasting a loss "
                     f"silently mixes samples), got {jnp.shape(pred)} and {jnp.shape(target)}")


def _sample_regression(rng, dtype):
  n, d = (int(k) for k in rng.integers(1, 5, size=2))
  shape = [(n, d), (n,), ()][rng.integers(0, 3)]
  kw = {"reduction": str(rng.choice(["mean", "sum", "none"]))}
  return (draw(rng, shape, dtype), draw(rng, shape, dtype)), kw


# ------------------------------------------------------------------------------------- squared_error

def squared_error(pred, target, reduction="mean"):
  """E = ½ Σ_features (pred − target)² per sample, reduced over the batch.  (Notes 000, 004.)

  Axis 0 is the batch; the per-sample loss sums over every other axis (a 1-D input is N samples of
  one feature, a 0-d input one sample). Local gradient: ∂E/∂pred = pred − target (note 000's first
  link, O − t), ∂E/∂target = −(pred − target). VJP: each scaled by the sample's upstream gradient.

  Args:
    pred: float array [N, ...] (or []).
    target: float array of the same shape.
    reduction: "mean" over N, "sum", or "none" for the [N] per-sample losses.
  """
  require_floats("squared_error", pred=pred, target=target)
  _check_same_shape("squared_error", pred, target)
  require_reduction("squared_error", reduction)
  return _squared_error(pred, target, reduction)


def _squared_error_forward(pred, target, reduction):
  diff = pred - target
  per_sample = 0.5 * jnp.sum(diff * diff, axis=tuple(range(1, diff.ndim)))
  return reduce_batch(per_sample, reduction), diff


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _squared_error(pred, target, reduction):
  return _squared_error_forward(pred, target, reduction)[0]


def _squared_error_fwd(pred, target, reduction):
  return _squared_error_forward(pred, target, reduction)  # keeps pred − target only


def _squared_error_bwd(reduction, diff, g):
  scale = _per_sample_scale(g, diff.shape[:1], reduction, diff.dtype)
  dpred = _expand(scale, diff.ndim) * diff
  return dpred, -dpred


def _squared_error_ref(pred, target, reduction="mean"):
  per_sample = 0.5 * jnp.sum((pred - target) ** 2, axis=tuple(range(1, jnp.ndim(pred))))
  return _reduce_ref(per_sample, reduction)


_squared_error.defvjp(_squared_error_fwd, _squared_error_bwd)
register(squared_error, _squared_error_ref, _sample_regression, note="000, 004")


# ----------------------------------------------------------------------------------------------- mse

def mse(pred, target, reduction="mean"):
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
  require_floats("mse", pred=pred, target=target)
  _check_same_shape("mse", pred, target)
  require_reduction("mse", reduction)
  return _mse(pred, target, reduction)


def _mse_forward(pred, target, reduction):
  diff = pred - target
  return reduce_batch(diff * diff, reduction), diff  # each element counts as a sample, as in PyTorch


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mse(pred, target, reduction):
  return _mse_forward(pred, target, reduction)[0]


def _mse_fwd(pred, target, reduction):
  return _mse_forward(pred, target, reduction)


def _mse_bwd(reduction, diff, g):
  dpred = 2 * _per_sample_scale(g, diff.shape, reduction, diff.dtype) * diff
  return dpred, -dpred


def _mse_ref(pred, target, reduction="mean"):
  sq = (pred - target) ** 2
  return _reduce_ref(sq, reduction)


_mse.defvjp(_mse_fwd, _mse_bwd)
register(mse, _mse_ref, _sample_regression, note="000")


# ----------------------------------------------------------------------------- softmax_cross_entropy

def _check_labels(op, scores, labels, allow_probabilities):
  """Validates class labels against scores [..., C]; returns True for probability labels."""
  s_shape, l_shape, l_dtype = jnp.shape(scores), jnp.shape(labels), jnp.result_type(labels)
  if len(s_shape) < 1:
    raise ValueError(f"{op}: scores must have a class axis [..., C], got shape {s_shape}")
  if allow_probabilities and jnp.issubdtype(l_dtype, jnp.inexact):
    if l_shape != s_shape:
      raise ValueError(f"{op}: probability labels must have the logits' shape {s_shape}, got {l_shape}")
    return True
  if not jnp.issubdtype(l_dtype, jnp.integer):
    kinds = "integer class indices or float probabilities" if allow_probabilities else "integer class indices"
    raise TypeError(f"{op}: argument 'labels' must be {kinds}, got dtype {l_dtype}")
  if l_shape != s_shape[:-1]:
    raise ValueError(f"{op}: integer labels must have shape {s_shape[:-1]} (one class index per "
                     f"sample), got {l_shape}")
  if not isinstance(labels, jax.core.Tracer):
    values = np.asarray(labels)
    bad = (values < 0) | (values >= s_shape[-1])
    if bad.any():
      raise ValueError(f"{op}: labels must lie in [0, {s_shape[-1]}), got {values[bad].ravel()[:5]} "
                       f"(first of {int(bad.sum())} out of range)")
  return False


def _nan_where_invalid(per_sample, labels, num_classes):
  """NaN for a sample whose integer label lies outside [0, num_classes): under ``jit`` the label's
  value cannot be checked, and a NaN loss stops training where a wrong number would not."""
  return jnp.where((labels >= 0) & (labels < num_classes), per_sample, jnp.nan)


def softmax_cross_entropy(logits, labels, reduction="mean"):
  """Cross-entropy of softmax(logits) against labels, fused.  (Notes 001, 004.)

  Per sample: L = −Σⱼ pⱼ · log_softmax(z)ⱼ with p the one-hot of an integer label (so L =
  logsumexp(z) − z_y) or a given probability vector. log_softmax uses log-sum-exp with the max
  subtracted, so a probability that underflows to 0 still gives a finite loss and gradient.
  Local gradients: ∂L/∂z = (Σⱼ pⱼ) softmax(z) − p (= softmax(z) − onehot(y)), ∂L/∂p = −log_softmax(z).
  VJP: dz = g · ((Σⱼ pⱼ) softmax(z) − p), dp = −g · log_softmax(z), g per sample.
  The rule keeps log_softmax(z) and the labels: softmax(z) = exp of it.

  Out-of-range integer labels raise ValueError when concrete; under ``jit``, where they cannot be
  seen, that sample's loss is NaN rather than a silently wrong number.

  Args:
    logits: float array [..., C] (usually [N, C]).
    labels: int array [...] of class indices in [0, C), or float array [..., C] of probabilities.
    reduction: "mean" over the samples, "sum", or "none".
  """
  require_float("softmax_cross_entropy", "logits", logits)
  probs = _check_labels("softmax_cross_entropy", logits, labels, allow_probabilities=True)
  require_reduction("softmax_cross_entropy", reduction)
  return _softmax_cross_entropy(logits, labels, reduction, probs)


def _targets(labels, num_classes, probs, dtype):
  return labels.astype(dtype) if probs else jax.nn.one_hot(labels, num_classes, dtype=dtype)


def _sce_forward(logits, labels, reduction, probs):
  ls = _log_softmax_forward(logits, -1)
  per_sample = -jnp.sum(_targets(labels, logits.shape[-1], probs, ls.dtype) * ls, axis=-1)
  if not probs:
    per_sample = _nan_where_invalid(per_sample, labels, logits.shape[-1])
  return reduce_batch(per_sample, reduction), ls


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _softmax_cross_entropy(logits, labels, reduction, probs):
  return _sce_forward(logits, labels, reduction, probs)[0]


def _sce_fwd(logits, labels, reduction, probs):
  out, ls = _sce_forward(logits, labels, reduction, probs)
  return out, (ls, labels)


def _sce_bwd(reduction, probs, res, g):
  ls, labels = res
  p = _targets(labels, ls.shape[-1], probs, ls.dtype)
  scale = _per_sample_scale(g, ls.shape[:-1], reduction, ls.dtype)[..., None]
  dlogits = scale * (jnp.sum(p, axis=-1, keepdims=True) * jnp.exp(ls) - p)
  dlabels = (-scale * ls).astype(labels.dtype) if probs else None
  return dlogits, dlabels


def _softmax_cross_entropy_ref(logits, labels, reduction="mean"):
  probs = jnp.issubdtype(jnp.result_type(labels), jnp.inexact)
  ls = jax.nn.log_softmax(logits, axis=-1)
  if probs:
    per_sample = -jnp.sum(labels * ls, axis=-1)
  else:
    per_sample = -jnp.take_along_axis(ls, labels[..., None], axis=-1)[..., 0]
  return _reduce_ref(per_sample, reduction)


def _sample_classification(rng, dtype, probabilities=None):
  n, c = int(rng.integers(1, 6)), int(rng.integers(2, 6))
  logits = draw(rng, (n, c), dtype, low=-3.0, high=3.0)
  if probabilities is None:
    probabilities = rng.random() < 0.5
  if probabilities:
    p = rng.dirichlet(np.ones(c), size=n).astype(dtype)
    labels = p
  else:
    labels = rng.integers(0, c, size=n).astype(np.int32)
  return (logits, labels), {"reduction": str(rng.choice(["mean", "sum", "none"]))}


_softmax_cross_entropy.defvjp(_sce_fwd, _sce_bwd)
register(softmax_cross_entropy, _softmax_cross_entropy_ref, _sample_classification, note="001, 004")


# ---------------------------------------------------------------------------------- multiclass_hinge

def multiclass_hinge(scores, labels, margin=1.0, reduction="mean"):
  """Multiclass SVM loss Lᵢ = Σ_{j≠yᵢ} max(0, s_j − s_{yᵢ} + margin).  (Note 001, section 1.)

  Local gradient per sample: ∂L/∂s_j = 1[s_j − s_y + margin > 0] for j ≠ y, and
  ∂L/∂s_y = −Σ_{j≠y} 1[s_j − s_y + margin > 0]: every class that violates the margin pushes its own
  score down and the true class's score up. VJP: ds = g · ∂L/∂s per sample; labels get none.
  At the kink (s_j − s_y + margin exactly 0) the rule takes the subgradient 0, as relu does.
  Out-of-range labels raise ValueError when concrete; under ``jit`` that sample's loss is NaN.

  Args:
    scores: float array [N, C] (or [..., C]).
    labels: int array [N] of class indices in [0, C).
    margin: Python float, the required gap Δ.
    reduction: "mean" over the samples, "sum", or "none".
  """
  require_float("multiclass_hinge", "scores", scores)
  _check_labels("multiclass_hinge", scores, labels, allow_probabilities=False)
  require_reduction("multiclass_hinge", reduction)
  if not margin >= 0:
    raise ValueError(f"multiclass_hinge: argument 'margin' must be >= 0, got {margin!r}")
  return _multiclass_hinge(scores, labels, float(margin), reduction)


def _hinge_forward(scores, labels, margin, reduction):
  onehot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
  true_score = jnp.sum(scores * onehot, axis=-1, keepdims=True)
  margins = jnp.where(onehot > 0, 0, scores - true_score + margin)
  per_sample = _nan_where_invalid(jnp.sum(jnp.maximum(margins, 0), axis=-1), labels, scores.shape[-1])
  violated = (margins > 0).astype(scores.dtype)
  local = violated - onehot * jnp.sum(violated, axis=-1, keepdims=True)
  return reduce_batch(per_sample, reduction), local


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _multiclass_hinge(scores, labels, margin, reduction):
  return _hinge_forward(scores, labels, margin, reduction)[0]


def _hinge_fwd(scores, labels, margin, reduction):
  out, local = _hinge_forward(scores, labels, margin, reduction)
  return out, local  # the local gradient ∂Lᵢ/∂s, one row per sample: all the backward needs


def _hinge_bwd(margin, reduction, local, g):
  scale = _per_sample_scale(g, local.shape[:-1], reduction, local.dtype)[..., None]
  return scale * local, None


def _multiclass_hinge_ref(scores, labels, margin=1.0, reduction="mean"):
  true_score = jnp.take_along_axis(scores, labels[..., None], axis=-1)
  margins = jnp.maximum(0, scores - true_score + margin)
  per_sample = jnp.sum(margins, axis=-1) - margin  # the j = y term is max(0, margin) = margin
  return _reduce_ref(per_sample, reduction)


def _sample_hinge(rng, dtype):
  for _ in range(100):  # redraw until no margin sits within 0.05 of its kink
    (scores, labels), kw = _sample_classification(rng, dtype, probabilities=False)
    margin = float(rng.choice([1.0, 0.5]))
    gaps = scores - np.take_along_axis(scores, labels[:, None], axis=-1) + margin
    gaps[np.arange(len(labels)), labels] = 1.0
    if np.abs(gaps).min() > 0.05:
      break
  return (scores, labels), {"margin": margin, **kw}


_multiclass_hinge.defvjp(_hinge_fwd, _hinge_bwd)
register(multiclass_hinge, _multiclass_hinge_ref, _sample_hinge, note="001")


# -------------------------------------------------------------------------------------- l2_penalty

def l2_penalty(tree, lam):
  """R = λ/2 · Σ ‖W‖² over every array leaf of ``tree``.  (Note 001, section 6.2.)

  Local gradients: ∂R/∂W = λW for every leaf (L2 regularisation is weight decay: the total gradient
  is ∂L_data/∂W + λW) and ∂R/∂λ = ½ Σ ‖W‖². VJP: dW = g·λW, dλ = g·½ Σ ‖W‖².
  Pass the subtree to penalise (often the weights only).

  Args:
    tree: a pytree whose leaves are float arrays.
    lam: the strength λ, a float scalar (Python float or 0-d array).
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    require_float("l2_penalty", f"tree{jax.tree_util.keystr(path)}", leaf)
  if jnp.ndim(lam) != 0:
    raise ValueError(f"l2_penalty: argument 'lam' must be a scalar, got shape {jnp.shape(lam)}")
  require_float("l2_penalty", "lam", lam)
  dtype = jnp.result_type(*(leaf for _, leaf in leaves)) if leaves else jnp.result_type(float)
  return _l2_penalty(tree, jnp.asarray(lam, dtype=dtype))  # the penalty takes the weights' dtype


def _sum_squares(tree):
  return sum(jnp.sum(leaf * leaf) for leaf in jax.tree_util.tree_leaves(tree))


@jax.custom_vjp
def _l2_penalty(tree, lam):
  return 0.5 * lam * _sum_squares(tree)


def _l2_penalty_fwd(tree, lam):
  return 0.5 * lam * _sum_squares(tree), (tree, lam)


def _l2_penalty_bwd(res, g):
  tree, lam = res
  dtree = jax.tree_util.tree_map(lambda w: (g * lam * w).astype(w.dtype), tree)
  dlam = g * 0.5 * _sum_squares(tree)
  return dtree, dlam.astype(lam.dtype)


def _l2_penalty_ref(tree, lam):
  return lam / 2 * sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(tree))


def _sample_l2(rng, dtype):
  tree = {"w1": draw(rng, (int(rng.integers(1, 4)), 3), dtype), "b1": draw(rng, (3,), dtype),
          "layers": [draw(rng, (2, 2), dtype)]}
  return (tree, np.asarray(rng.uniform(0.1, 1.0), dtype=dtype)), {}


_l2_penalty.defvjp(_l2_penalty_fwd, _l2_penalty_bwd)
register(l2_penalty, _l2_penalty_ref, _sample_l2, note="001")
