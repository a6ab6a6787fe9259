"""Fused linear cross-entropy (Liger-Kernel's): the loss of softmax(h·W) without the [N, V] logits."""

import functools
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbp.ops._cross_entropy import CEOptions
from jaxbp.ops._cross_entropy import ce_options
from jaxbp.ops._cross_entropy import checkable_labels
from jaxbp.ops._cross_entropy import cross_entropy_ref
from jaxbp.ops._cross_entropy import dlogits
from jaxbp.ops._cross_entropy import kept
from jaxbp.ops._cross_entropy import smoothed_loss
from jaxbp.ops._cross_entropy import softcapped
from jaxbp.ops._loss_samplers import with_options
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._util import REDUCTIONS
from jaxbp.ops._util import balanced_blocks
from jaxbp.ops._util import class_labels
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import reduce_batch
from jaxbp.ops._util import require_reduction
from jaxbp.ops.losses import _nan_where_invalid


class _Chunks(NamedTuple):
  """The N rows cut into ``count`` chunks of ``rows`` (the last ones padded with masked rows), and the options."""
  n: int
  rows: int
  number: int
  reduction: str
  options: CEOptions = CEOptions()


def linear_softmax_cross_entropy(h: ArrayLike, w: ArrayLike, labels: ArrayLike, *,
                                 chunk_size: int | None = None, reduction: str = "mean",
                                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                                 z_loss: float = 0.0, softcap: float | None = None) -> jax.Array:
  """softmax_cross_entropy(h·W, labels) fused, chunk by chunk of rows: the [N, V] logits never exist.

  Forward, per row n: z_n = h_n·W ([V]), L_n = logsumexp(z_n) − z_{n, y_n}; reduced over the N rows.
  Local Jacobian and VJP, with G = softmax(z) − onehot(y) ([N, V]) and g_n the upstream gradient of row
  n (g/N under "mean", g under "sum"): dh = (g ∘ G)·Wᵀ, dW = hᵀ·(g ∘ G), labels get none.

  Chunks: rows are processed ``chunk_size`` at a time, so at most a [chunk_size, V] block of logits is
  alive (the default picks chunk_size ≈ N·D/V so that block is no larger than h, but at least 256 rows,
so that each matrix product has rows enough to run fast; docs/performance.md has the measured times). A plain evaluation
  computes each chunk's loss only. Under differentiation with "mean" or "sum", the forward also forms
  each chunk's G and adds its share to dh and dW at once (the residuals are the UNSCALED gradients of
  Σ_n L_n, [N, D] and [D, V], the sizes of h and W, kept in float32 at least so that bfloat16 inputs get
  gradients rounded once); the backward merely multiplies them by g (or g/N): no second pass over the
  vocabulary. With "none", g differs per row and dW = Σ_n g_n·h_nᵀG_n cannot be
  formed before g is known, so that forward keeps h, W, labels and one log-sum-exp per row, and the
  backward recomputes each chunk's logits (FlashAttention's choice). (The custom_vjp's forward runs only
  under differentiation: that is how the two evaluations are told apart.)

  Why chunks of rows and not of the vocabulary: every row's G needs its full log-sum-exp first, so
  vocabulary chunks with an online log-sum-exp need a second pass over W (recompute z, then dW): four
  [N, D]×[D, V] products instead of the three of autodiff. Chunks of rows keep the three.

  The options of ``softmax_cross_entropy`` (``ignore_index``, ``label_smoothing``, ``z_loss``, ``softcap``,
  formulas in ``jaxbp/ops/_cross_entropy.py``) act inside the same pass: G becomes
  (((1 − ε) + ε + 2ζ·lse_n)·softmax(s_n) − (1 − ε)·onehot(y_n) − ε/V) ∘ (1 − (s_n/c)²) for s = c·tanh(z/c),
  an ignored row's G is 0, and "mean" divides by the rows kept (their count is one more residual).
  Nothing of size [N, V] is added: each option is elementwise on the chunk's logits.

  Out-of-range labels (other than ``ignore_index``) raise ValueError when concrete; under ``jit`` that
  row's loss is NaN.

  Args:
    h: float array [N, D], the last hidden states.
    w: float array [D, V], the output projection; same dtype as h.
    labels: int array [N] of class indices in [0, V).
    chunk_size: Python int ≥ 1, rows per chunk; None for max(256, N·D // V) (capped at N).
    reduction: "mean" over the N rows, "sum", or "none" for the [N] per-row losses.
    ignore_index: Python int or None; rows with this label get no loss and no gradient.
    label_smoothing: Python float ε in [0, 1] (torch's definition).
    z_loss: Python float ζ ≥ 0: adds ζ·logsumexp(s)² per row (PaLM).
    softcap: Python float c > 0 or None: logits s = c·tanh(z/c) (Gemma 2).

  Returns:
    The loss (a scalar, or [N] for "none") of h's dtype.

  Note: 001, 004 (softmax cross-entropy's fused gradient); Liger-Kernel (Hsu et al. 2024).
  """
  op = "linear_softmax_cross_entropy"
  h, w = float_arrays(op, h=h, w=w)
  opts = ce_options(op, ignore_index, label_smoothing, z_loss, softcap)
  chunks = _check_linear_ce(h, w, chunk_size, reduction)._replace(options=opts)
  logits = cast(jax.Array, jax.ShapeDtypeStruct((h.shape[0], w.shape[1]), h.dtype))  # only its shape is read
  checked, _ = class_labels(op, logits, checkable_labels(labels, opts), allow_probabilities=False)
  return _linear_softmax_cross_entropy(h, w, checked if ignore_index is None else jnp.asarray(labels), chunks)


def _check_linear_ce(h, w, chunk_size, reduction, op="linear_softmax_cross_entropy"):
  if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[0]:
    raise ValueError(f"{op}: arguments 'h' [N, D] and 'w' [D, V] do not fit, got h {h.shape} and w {w.shape}")
  if h.dtype != w.dtype:
    raise TypeError(f"{op}: 'h' and 'w' must share one dtype, got {h.dtype} and {w.dtype}")
  if w.shape[1] < 1:
    raise ValueError(f"{op}: argument 'w' needs at least one class, got shape {w.shape}")
  require_reduction(op, reduction)
  n = h.shape[0]
  if chunk_size is None:
    chunk_size = max(256, n * h.shape[1] // w.shape[1])
  if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
    raise ValueError(f"{op}: argument 'chunk_size' must be a Python int >= 1 or None, got {chunk_size!r}")
  rows, count = balanced_blocks(n, chunk_size)
  return _Chunks(n, rows, count, reduction)


def _chunked(chunks, x):
  """[N, ...] → [count, rows, ...], zero-padded at the end."""
  pad = chunks.number * chunks.rows - x.shape[0]
  x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
  return x.reshape((chunks.number, chunks.rows) + x.shape[1:])


def _scores(h_c, w, opts):
  """One chunk's logits s = softcap(h·W) [rows, V] in float32 at least."""
  return softcapped(jnp.matmul(h_c, w, preferred_element_type=jnp.promote_types(h_c.dtype, jnp.float32)), opts)


def _chunk_logits(h_c, w, y_c, opts):
  """One chunk's logits ``_scores`` [rows, V], their log-sum-exp [rows] and each row's loss [rows] (the
  options' formula; ignored rows are masked by ``_finish``)."""
  s = _scores(h_c, w, opts)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  r = s - m                                                             # shifted: lse − s_y = logz − r_y
  logz = jnp.log(jnp.sum(jnp.exp(r), axis=-1))
  r_y = jnp.take_along_axis(r, jnp.clip(y_c, 0, w.shape[1] - 1)[:, None], axis=-1)[:, 0]
  return s, m[:, 0] + logz, smoothed_loss(logz, r_y, 1.0, r, opts, m[:, 0])


@functools.partial(jax.jit, static_argnums=(3,))  # one program per shape, also when called eagerly
def _losses(h, w, labels, chunks):
  """Per-row losses [N] and log-sum-exps [N], chunk by chunk: the loss alone, no gradient."""
  def chunk(_, xs):
    h_c, y_c = xs
    _, lse, loss = _chunk_logits(h_c, w, y_c, chunks.options)
    return None, (loss, lse)

  _, (loss, lse) = jax.lax.scan(chunk, None, (_chunked(chunks, h), _chunked(chunks, labels)))
  return loss.reshape(-1)[:chunks.n], lse.reshape(-1)[:chunks.n]


def _finish(loss, labels, w, chunks, dtype):
  """The reduced loss: ignored rows 0, rows with an invalid label NaN, "mean" over the rows kept."""
  opts, keep = chunks.options, kept(labels, chunks.options)
  loss = loss if keep is None else jnp.where(keep, loss, 0)
  loss = _nan_where_invalid(loss, labels, w.shape[1], opts.ignore_index)
  return reduce_batch(loss, chunks.reduction, keep).astype(dtype)


def _scaled_grad(s, lse, y_c, s_c, opts):
  """s_c ∘ G for one chunk [rows, V], G = ∂L/∂z (``dlogits``: softmax(s) − onehot(y) without options).
  A padding or ignored row has s_c = 0, so its row is 0; an out-of-range label makes its s_c, and so its
  row, NaN: one [rows] select each, no [rows, V] pass beyond G itself."""
  onehot = jax.nn.one_hot(y_c, s.shape[-1], dtype=s.dtype)
  grad = dlogits(jnp.exp(s - lse[:, None]), onehot, 1.0, lse, s, opts)
  return grad * _nan_where_invalid(s_c, y_c, s.shape[-1], opts.ignore_index)[:, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_softmax_cross_entropy(h, w, labels, chunks):
  """A plain evaluation: the loss only (NOT ``_fwd(...)[0]``, which would also form the gradients)."""
  return _finish(_losses(h, w, labels, chunks)[0], labels, w, chunks, h.dtype)


class _Gradients(NamedTuple):
  dh: jax.Array  # [N, D] ∂(Σ_n L_n)/∂h, formed in the forward (float32 at least, rounded once in _bwd)
  dw: jax.Array  # [D, V] ∂(Σ_n L_n)/∂W, formed in the forward (float32 at least)
  kept_rows: jax.Array  # [] the rows kept (N without ignore_index): "mean"'s divisor


class _Recompute(NamedTuple):
  h: jax.Array       # [N, D] input: the logits are recomputed from h and W
  w: jax.Array       # [D, V] input
  labels: jax.Array  # [N]
  lse: jax.Array     # [N] log-sum-exp per row: softmax = exp(z − lse) without a second max/sum


def _linear_softmax_cross_entropy_fwd(h, w, labels, chunks):
  if chunks.reduction == "none":
    loss, lse = _losses(h, w, labels, chunks)
    return _finish(loss, labels, w, chunks, h.dtype), _Recompute(h, w, labels, lse)
  loss, dh, dw = _pass(h, w, labels, chunks, None)
  keep = kept(labels, chunks.options)
  count = jnp.asarray(chunks.n if keep is None else jnp.sum(keep), dw.dtype)
  return _finish(loss, labels, w, chunks, h.dtype), _Gradients(dh, dw, count)  # float32 at least: rounded once, in _bwd


@functools.partial(jax.jit, static_argnums=(3,))
def _pass(h, w, labels, chunks, row_scale, lse=None):
  """One pass over the row chunks forming dh = (s ∘ G)·Wᵀ and dW = hᵀ·(s ∘ G), s = ``row_scale`` (or 1).

  With ``lse`` given (the backward of "none"), the chunk's log-sum-exp is not recomputed.
  Returns (per-row losses, dh, dW); the losses only where ``lse`` is None (else an empty array).
  """
  dt, keep = jnp.promote_types(h.dtype, jnp.float32), kept(labels, chunks.options)
  scale = jnp.ones((chunks.n,), dt) if row_scale is None else row_scale.astype(dt)
  scale = scale if keep is None else jnp.where(keep, scale, 0)              # an ignored row: no gradient
  xs = tuple(_chunked(chunks, a) for a in (h, labels, scale, jnp.zeros((chunks.n,), dt) if lse is None
                                               else lse))

  def chunk(dw, x):
    h_c, y_c, s_c, lse_c = x
    if lse is None:
      s, lse_c, loss = _chunk_logits(h_c, w, y_c, chunks.options)
    else:  # the backward of "none": the log-sum-exp is kept, the loss is not wanted
      s, loss = _scores(h_c, w, chunks.options), jnp.zeros((0,), dt)
    grad = _scaled_grad(s, lse_c, y_c, s_c, chunks.options)                 # s ∘ G
    dh_c = jnp.matmul(grad, w.T.astype(dt))                                  # dh = (s ∘ G)·Wᵀ
    dw = dw + jnp.matmul(h_c.T.astype(dt), grad)                             # dW += hᵀ·(s ∘ G)
    return dw, (loss, dh_c)

  dw, (loss, dh) = jax.lax.scan(chunk, jnp.zeros(w.shape, dt), xs)
  return loss.reshape(-1)[:chunks.n], dh.reshape(chunks.number * chunks.rows, h.shape[1])[:chunks.n], dw


def _linear_softmax_cross_entropy_bwd(chunks, res, g):
  if chunks.reduction == "none":
    h, w, labels, lse = res
    _, dh, dw = _pass(h, w, labels, chunks, g, lse)
    return dh.astype(h.dtype), dw.astype(w.dtype), None
  g32 = g.astype(res.dh.dtype)                                       # g is of h's (and W's) dtype
  # the cotangent of the reduction; with no row kept, dh = dW = 0 (not 0/0)
  scale = g32 / jnp.maximum(res.kept_rows, 1) if chunks.reduction == "mean" else g32
  return (scale * res.dh).astype(g.dtype), (scale * res.dw).astype(g.dtype), None


_linear_softmax_cross_entropy.defvjp(_linear_softmax_cross_entropy_fwd, _linear_softmax_cross_entropy_bwd)


def _linear_softmax_cross_entropy_ref(h, w, labels, *, chunk_size=None, reduction="mean", ignore_index=None,
                                      label_smoothing=0.0, z_loss=0.0, softcap=None):
  del chunk_size
  return cross_entropy_ref(h @ w, labels, CEOptions(ignore_index, label_smoothing, z_loss, softcap), reduction)


def _ce_sampler(reductions, chunk_sizes=(None, 1, 2, 3), n=(1, 6), d=(1, 3)):
  def sample(rng, dtype):
    rows, width, v = int(rng.integers(n[0], n[1] + 1)), int(rng.integers(d[0], d[1] + 1)), int(rng.integers(2, 6))
    h, w = uniform(rng, (rows, width), dtype), uniform(rng, (width, v), dtype)
    labels = rng.integers(0, v, size=rows).astype("int32")
    chunk = chunk_sizes[int(rng.integers(len(chunk_sizes)))]
    return (h, w, labels), {"reduction": str(rng.choice(reductions)), "chunk_size": chunk}
  return sample


_BRANCHES = {
    "mean (gradients formed in the forward), chunks that do not divide N": _ce_sampler(["mean"], (2, 3), n=(4, 7)),
    "sum": _ce_sampler(["sum"]),
    "none (logits recomputed in the backward)": _ce_sampler(["none"]),
    "one row, one chunk": _ce_sampler(["mean", "sum", "none"], (None, 4), n=(1, 1)),
    "N = 0 (no rows: sum 0, none empty, zero gradients, as jnp)": _ce_sampler(["sum", "none"], n=(0, 0)),
    "D = 0 (no features: uniform logits, loss log V, empty gradients)": _ce_sampler(["mean", "none"], d=(0, 0)),
    "softcap": with_options(_ce_sampler(REDUCTIONS), softcap=[1.0, 3.0]),
    "label smoothing 0 and 1": with_options(_ce_sampler(REDUCTIONS), label_smoothing=[0.0, 1.0]),
    "z-loss": with_options(_ce_sampler(REDUCTIONS), z_loss=[1e-4, 0.5]),
    "ignore_index on some rows, mean": with_options(_ce_sampler(["mean"], (2, 3), n=(4, 7)), ignore=0.5),
    "ignore_index on every row of the first chunk": with_options(_ce_sampler(REDUCTIONS, (2,), n=(4, 6)),
                                                                  ignore="first 2"),
    "ignore_index on every row (mean: NaN, zero gradients)": with_options(_ce_sampler(REDUCTIONS), ignore=1.0),
    "all options, mean": with_options(_ce_sampler(["mean"], (2, 3), n=(4, 7)), ignore=0.3, softcap=[2.0],
                                       label_smoothing=[0.2], z_loss=[0.1]),
    "all options, none (logits recomputed in the backward)": with_options(
        _ce_sampler(["none"], (2, 3), n=(4, 7)), ignore=0.3, softcap=[2.0], label_smoothing=[0.2], z_loss=[0.1]),
}

register(linear_softmax_cross_entropy, _linear_softmax_cross_entropy_ref, any_branch(_BRANCHES), branches=_BRANCHES,
         note="001, 004; Liger-Kernel")
