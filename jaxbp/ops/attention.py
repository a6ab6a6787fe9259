"""Attention with FlashAttention's residuals: the output and one log-sum-exp per row, nothing of size T×S.

The forward walks over blocks of queries and, inside, over blocks of keys with an online log-sum-exp
(Milakov & Gimelshein's online softmax, Rabe & Staats, FlashAttention); the backward is FlashAttention-2's,
block by block, recomputing each block of probabilities from the saved log-sum-exp. Nothing the size of
the [T, S] score matrix is ever held: the memory of a training step grows as O(T + S), not O(T·S). The
block geometry and the scores of one block, with every option, are in ``_attention_blocks``.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops import _attention_blocks as ab
from jaxbp.ops._attention_samplers import BRANCHES
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import balanced_blocks
from jaxbp.ops._util import float_array
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import int_array
from jaxbp.ops._util import static_number

# ------------------------------------------------------------------------------------------ attention


def attention(q: jax.typing.ArrayLike, k: jax.typing.ArrayLike, v: jax.typing.ArrayLike, *,
              causal: bool = False, mask: jax.typing.ArrayLike | None = None, scale: float | None = None,
              window: int | None = None, softcap: float | None = None,
              segment_ids: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] | None = None,
              alibi_slopes: jax.typing.ArrayLike | None = None, block_size: int = 512) -> jax.Array:
  """Scaled dot-product attention, blockwise: O = softmax(scale·Q·Kᵀ + masking)·V per batch and head.

  Forward, per batch b and query head h (reading kv head h // (heads / kv_heads): grouped-query
  attention, multi-query with one kv head): S = scale·Q·Kᵀ ([T, S]); with ``softcap`` c,
  S ← c·tanh(S / c); with ``alibi_slopes`` m, S_ij ← S_ij − m_h·|i − j|; S_ij = −∞ where query i may not
  see key j (``mask`` False, j > i under ``causal``, |i − j| ≥ ``window``, different ``segment_ids``);
  P = softmax over j, O = P·V. It runs over blocks of queries and, inside, over blocks of keys with an
  online log-sum-exp: a running max m, sum ℓ = Σ exp(S − m) and accumulator A = Σ exp(S − m)·V are
  rescaled by exp(m_old − m_new) as each key block arrives, so that O = A/ℓ and lse = m + log ℓ.

  Local Jacobian and VJP (FlashAttention-2's backward), with dO = g and per block (i, j):
  P_ij = exp(S_ij − lse_i) (recomputed), dV_j += P_ijᵀ·dO_i, dP_ij = dO_i·V_jᵀ, D_i = rowsum(dO_i ∘ O_i),
  dS_ij = P_ij ∘ (dP_ij − D_i), dS_ij ← dS_ij ∘ (1 − tanh²(scale·Q_i·K_jᵀ / c)) under ``softcap``,
  dQ_i += dS_ij·K_j·scale, dK_j += dS_ijᵀ·Q_i·scale. (D_i = Σ_j P_ij·dP_ij: the softmax Jacobian
  diag(p) − p·pᵀ applied to dP, without building it.) Precision: where a row's softmax is nearly one-hot
  at its top key t_i (largest score), dP_it − D_i = dO_i·(V_t − O_i) cancels when formed as a difference
  (FlashAttention-2 loses dQ and dK there: 2e-2 of their scale in float32 on keys close to the queries,
  where autodiff loses 5e-3), so the forward keeps its accumulator relative to the top key's value,
  A = Σ_j exp(S_ij − m)·(V_j − V_t) (the top key's own term is exactly 0; A ← A + ℓ·(V_t,old − V_t,new)
  when the top key moves), O = V_t + A/ℓ, and the backward takes dP_it − D_i = −dO_i·(A/ℓ) at that one
  entry: 1e-6 of the scale in float32. The heads of a group add their dK and dV into their kv head's
  (no K or V is repeated). Blocks that ``causal`` or ``window`` mask entirely are never visited, in
  either pass: with a window the work grows as T·window, not T·S. ALiBi slopes get no gradient (they are
  fixed per head, as in the paper; the reference stops theirs too).

  Residuals: q, k, v (the inputs, which every backward needs), the output O and O − V_t (float32 at
  least), lse and the top key t, one float and one int per query row and head: O(T + S) memory. The
  [T, S] probabilities are never kept; autodiff of the plain reference keeps them (and the scores),
  O(T·S). The price is one more Q·Kᵀ product in the backward. Compiled temporary memory (XLA's
  ``memory_analysis()``, jax 0.10.2 on the CPU, float32) of a jitted ``value_and_grad`` of Σ O ⊙ u with
  respect to q, k and v, against the same step on the reference (``jaxbp bench``'s llm section): at B 1,
  T 4096, 8 query heads on 2 kv heads, Dh 64, causal, 56.8 MiB against 3,096.2 MiB (0.018×); with a
  window of 512 at T 8192 (the same heads), 93.1 MiB against 12,336.5 MiB (0.0075×).

  Edge cases: a query row that no key may attend to has an empty softmax; it outputs 0 and gets
  gradient 0, and passes none to k and v (its lse is stored as 0, a finite stand-in for log 0 that no
  unmasked entry ever reads). ``causal`` aligns the top-left corners: query i sees keys 0..i (``jnp.tril``
  of a [T, S] matrix, as ``jax.nn.dot_product_attention(is_causal=True)``), so with T > S rows i ≥ S see
  every key. T ≠ S, T or S not a multiple of ``block_size`` (the last block is padded and the padding
  masked) and ``block_size`` ≥ T or S (one block) are all ordinary cases, and so are T = 0 (an empty
  output) and S = 0 (every row fully masked: O = 0, dQ = 0). Blocks are balanced: T = 600 with
  ``block_size`` 512 is two blocks of 300. Arithmetic runs in float32 at least (float64 stays float64).

  Args:
    q: float array [B, T, heads, Dh], the queries.
    k: float array [B, S, kv_heads, Dh], the keys; kv_heads divides heads.
    v: float array [B, S, kv_heads, Dv], the values; same dtype as q and k.
    causal: query i attends to keys j ≤ i only.
    mask: optional boolean array broadcastable to [B, heads, T, S]; False removes a (query, key) pair.
    scale: Python float multiplying the scores; default 1/√Dh.
    window: optional Python int ≥ 1: query i attends to keys with |i − j| < window only.
    softcap: optional Python float > 0: scores become softcap·tanh(scores / softcap) (Gemma 2).
    segment_ids: optional pair of int arrays [B, T] and [B, S]: a pair attends only where its ids are equal.
    alibi_slopes: optional float array [heads]: the scores lose slope·|i − j| (ALiBi); no gradient.
    block_size: Python int ≥ 1, the most queries and keys per block.

  Returns:
    Array [B, T, heads, Dv] of q's dtype.

  Note: FlashAttention (Dao et al. 2022), FlashAttention-2 (Dao 2023); the softmax gate of note 001.
  """
  q, k, v = float_arrays("attention", q=q, k=k, v=v)
  _check_shapes(q, k, v)
  blk = _geometry(q, k, causal, scale, window, softcap, block_size)
  mask = None if mask is None else _check_mask(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
  seg_q, seg_k = _check_segments(segment_ids, q.shape[:2], k.shape[:2])
  # the slopes take no gradient and do not decide the output's dtype: in q's, as the reference rounds them
  slopes = None if alibi_slopes is None else _check_slopes(alibi_slopes, q.shape[2]).astype(q.dtype)
  return _attention(q, k, v, mask, seg_q, seg_k, slopes, blk)


def _check_shapes(q, k, v):
  qs, ks, vs = q.shape, k.shape, v.shape
  for name, shape in (("q", qs), ("k", ks), ("v", vs)):
    if len(shape) != 4:
      raise ValueError(f"attention: argument '{name}' must be [B, length, heads, dim], got shape {shape}")
  if ks[:3] != vs[:3] or ks[0] != qs[0] or ks[3] != qs[3] or ks[2] < 1:
    raise ValueError(f"attention: shapes do not fit q [B, T, heads, Dh], k [B, S, kv_heads, Dh], "
                     f"v [B, S, kv_heads, Dv]: got q {qs}, k {ks}, v {vs}")
  if qs[2] % ks[2]:
    raise ValueError(f"attention: argument 'k' has {ks[2]} kv heads, which must divide q's {qs[2]} heads "
                     f"(got q {qs}, k {ks})")
  dtypes = {jnp.result_type(x) for x in (q, k, v)}
  if len(dtypes) > 1:
    raise TypeError(f"attention: q, k and v must share one dtype, got {sorted(map(str, dtypes))}")


def _geometry(q, k, causal, scale, window, softcap, block_size):
  """The static ``Blocks`` of a call, its Python arguments checked."""
  if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
    raise ValueError(f"attention: argument 'block_size' must be a Python int >= 1, got {block_size!r}")
  if not isinstance(causal, bool):
    raise TypeError(f"attention: argument 'causal' must be a bool, got {causal!r}")
  if window is not None and (not isinstance(window, (int, np.integer)) or isinstance(window, bool)
                             or window < 1):
    raise ValueError(f"attention: argument 'window' must be a Python int >= 1 or None, got {window!r}")
  if softcap is not None:
    softcap = static_number("attention", "softcap", softcap)
    if softcap <= 0:
      raise ValueError(f"attention: argument 'softcap' must be > 0 or None, got {softcap!r}")
  factor = 1.0 / math.sqrt(q.shape[3]) if scale is None else static_number("attention", "scale", scale)
  (bq, nq), (bk, nk) = balanced_blocks(q.shape[1], int(block_size)), balanced_blocks(k.shape[1], int(block_size))
  return ab.Blocks(q.shape[1], k.shape[1], bq, nq, bk, nk, q.shape[2], k.shape[2], causal, factor,
                   None if window is None else int(window), softcap)


def _check_mask(mask, full):
  if not hasattr(mask, "dtype") or jnp.result_type(mask) != jnp.bool_:
    got = f"dtype {mask.dtype}" if hasattr(mask, "dtype") else type(mask).__name__
    raise TypeError(f"attention: argument 'mask' must be a boolean array, got {got}")
  shape = jnp.shape(mask)
  try:
    fits = len(shape) <= 4 and np.broadcast_shapes(shape, full) == full
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"attention: argument 'mask' of shape {shape} does not broadcast to "
                     f"[B, heads, T, S] = {full}")
  return jnp.reshape(mask, (1,) * (4 - len(shape)) + tuple(shape))


def _check_segments(segment_ids, q_rows, k_rows):
  if segment_ids is None:
    return None, None
  if not isinstance(segment_ids, (tuple, list)) or len(segment_ids) != 2:
    raise TypeError(f"attention: argument 'segment_ids' must be a pair (ids of the queries [B, T], ids of "
                    f"the keys [B, S]), got {type(segment_ids).__name__}")
  ids = tuple(int_array("attention", "segment_ids", x) for x in segment_ids)
  for x, want, which in zip(ids, (q_rows, k_rows), ("queries [B, T]", "keys [B, S]")):
    if x.shape != tuple(want):
      raise ValueError(f"attention: argument 'segment_ids' must hold the ids of the {which} = {tuple(want)}, "
                       f"got shapes {ids[0].shape} and {ids[1].shape}")
  return ids


def _check_slopes(slopes, heads):
  slopes = float_array("attention", "alibi_slopes", slopes)
  if slopes.shape != (heads,):
    raise ValueError(f"attention: argument 'alibi_slopes' must have shape [heads] = ({heads},), "
                     f"got {slopes.shape}")
  return slopes



class _AttentionResiduals(NamedTuple):
  q: jax.Array     # [B, T, H, Dh] input: dK needs it
  k: jax.Array     # [B, S, kv, Dh] input: dQ and the recomputed scores need it
  v: jax.Array     # [B, S, kv, Dv] input: dP = dO·Vᵀ needs it
  mask: jax.Array | None   # the caller's boolean mask (no copy is made)
  seg_q: jax.Array | None  # [B, T] the caller's segment ids
  seg_k: jax.Array | None  # [B, S]
  slopes: jax.Array | None  # [H] the caller's ALiBi slopes
  o: jax.Array     # [B, T, H, Dv] output in float32 at least: D = rowsum(dO ∘ O)
  off: jax.Array   # [B, T, H, Dv] O − V_t, kept to its last digits: dP_it − D = −dO·(O − V_t)
  lse: jax.Array   # [B, H, T] log-sum-exp per query row: P = exp(S − lse) without a second max/sum
  top: jax.Array   # [B, H, T] int32 index of each row's largest score t: where dP − D cancels


def _attention_fwd(q, k, v, mask, seg_q, seg_k, slopes, blk):
  """O and its residuals. The inputs are kept as the caller's arrays, built outside the jitted program:
  ``vjp_rule`` keeps an input in its own dtype by its identity, which a jitted function's outputs lose."""
  o, off, lse, top = _forward(q, k, v, mask, seg_q, seg_k, slopes, blk)
  return o.astype(q.dtype), _AttentionResiduals(q, k, v, mask, seg_q, seg_k, slopes, o, off, lse, top)


@functools.partial(jax.jit, static_argnums=(7,))  # one program per shape, also when called eagerly
def _forward(q, k, v, mask, seg_q, seg_k, slopes, blk):
  """O (float32 at least), O − V_t, lse and t [B, H, T] by the online log-sum-exp over key blocks, per query
  block."""
  dt = q.dtype  # float32 at least: vjp_rule upcasts bfloat16 and float16 inputs
  qb = ab.to_blocks(q, blk.bq, blk.nq, blk.group)
  kb, vb = ab.kv_blocks(k, blk.bk, blk.nk), ab.kv_blocks(v, blk.bk, blk.nk)
  ex = ab.extras(blk, mask, seg_q, seg_k, slopes, dt)
  start, lo, hi, width = ab.key_spans(blk)

  def query_block(_, xs):
    i, q_i, j0, j_lo, j_hi = xs
    rows, vrows = q_i.shape[:4], q_i.shape[:4] + vb.shape[-1:]
    init = (jnp.full(rows, -jnp.inf, dt), jnp.zeros(rows, dt), jnp.zeros(vrows, dt), jnp.zeros(rows, jnp.int32),
            jnp.zeros(vrows, dt))

    def key_block(carry, r):
      j = j0 + r
      step = functools.partial(_online_step, blk, ex, i, j, q_i, kb[j], vb[j])
      return jax.lax.cond((j_lo <= j) & (j <= j_hi), step, lambda c: c, carry), None

    (m, ell, acc, top, v_top), _ = jax.lax.scan(key_block, init, jnp.arange(width))
    seen = ell > 0
    off_i = jnp.where(seen[..., None], acc / jnp.where(seen, ell, 1)[..., None], 0)   # O − V_t
    lse_i = jnp.where(seen, _finite(m) + jnp.log(jnp.where(seen, ell, 1)), 0)
    return None, (jnp.where(seen[..., None], v_top + off_i, 0), off_i, lse_i, top)

  _, (ob, offb, lseb, topb) = jax.lax.scan(query_block, None, (jnp.arange(blk.nq), qb, start, lo, hi))
  o, off = ab.from_blocks(ob, blk.t), ab.from_blocks(offb, blk.t)
  lse, top = ab.rows_from_blocks(lseb, blk.t), ab.rows_from_blocks(topb, blk.t)
  return o, off, lse, top


def _finite(m):
  """The running max with −∞ (a row that has seen no key yet) replaced by 0, so that exp(S − m) is 0."""
  return jnp.where(jnp.isfinite(m), m, 0)


def _online_step(blk, ex, i, j, q_i, k_j, v_j, carry):
  """One key block of the online softmax: rescale (ℓ, A) from the old max to the new one, add the block.
  A = Σ_j exp(S_j − m)·(V_j − V_t) is kept relative to the value of the top key t (so that O − V_t, where
  dP − D cancels, keeps its digits on a peaked row); t moves to this block where its largest score beats
  the old max, and A moves with it: A ← A + ℓ·(V_t,old − V_t,new). The top key's p is exp(0) = 1 exactly
  where it moved here, so ℓ takes Σ p over the block's other keys plus 1: one sum for ℓ and A."""
  m, ell, acc, top, v_top = carry
  s, _ = ab.scores(blk, ex, i, j, q_i, k_j)
  dt = s.dtype
  s_max, keys = jnp.max(s, axis=-1), jnp.arange(blk.bk, dtype=jnp.int32)
  arg = jnp.min(jnp.where(s == s_max[..., None], keys, blk.bk - 1), axis=-1)  # argmax as a plain min:
  moved = s_max > m                                   # jnp.argmax's (value, index) reduce doubled the pass
  top = jnp.where(moved, (j * blk.bk + arg).astype(jnp.int32), top)
  here = jnp.take_along_axis(v_j, arg.reshape(arg.shape[:2] + (-1, 1)), axis=2).reshape(v_top.shape)
  v_new = jnp.where(moved[..., None], here, v_top)
  m_new = jnp.maximum(m, s_max)
  corr = jnp.exp(m - _finite(m_new))
  p_off = jnp.where(j * blk.bk + keys == top[..., None], 0, jnp.exp(s - _finite(m_new)[..., None]))
  sum_off = jnp.sum(p_off, axis=-1)                # the top key adds 0 to A, and exp(0) = 1 to ℓ if here
  acc = (acc + ell[..., None] * (v_top - v_new)) * corr[..., None] \
      + ab.by_rows("bhrk,bhkd->bhrd", p_off, v_j) - sum_off[..., None] * v_new
  ell = ell * corr + (sum_off + moved.astype(dt))
  return m_new, ell, acc, top, v_new


@functools.partial(jax.jit, static_argnums=(0,))
def _attention_bwd(blk, res, g):
  """FlashAttention-2's backward: outer loop over key blocks j (dK_j, dV_j), inner over query blocks i."""
  q, k, v, mask, seg_q, seg_k, slopes, o, off, lse, top = res
  dt = q.dtype  # q, k, v, g: float32 at least (vjp_rule upcasts the narrower ones)
  delta = jnp.sum(g * o, axis=-1)                                           # D = rowsum(dO ∘ O), [B, T, H]
  near = -jnp.sum(g * off, axis=-1)                                         # dP_it − D = dO·(V_t − O)
  qb, gb = ab.to_blocks(q, blk.bq, blk.nq, blk.group), ab.to_blocks(g, blk.bq, blk.nq, blk.group)
  kb, vb = ab.kv_blocks(k, blk.bk, blk.nk), ab.kv_blocks(v, blk.bk, blk.nk)
  rows = jnp.stack([lse, delta.transpose(0, 2, 1), near.transpose(0, 2, 1)], -1)  # [B, H, T, 3]
  rb = jax.vmap(lambda r: ab.rows_to_blocks(r, blk), in_axes=-1, out_axes=-1)(rows)
  tb = ab.rows_to_blocks(top, blk)
  ex = ab.extras(blk, mask, seg_q, seg_k, slopes, dt)
  start, lo, hi, width = ab.query_spans(blk)

  def key_block(dq, xs):
    j, k_j, v_j, i0, i_lo, i_hi = xs

    def query_block(carry, r):
      i = i0 + r
      step = functools.partial(_grad_step, blk, ex, i, j, qb[i], gb[i], rb[i], tb[i], k_j, v_j)
      return jax.lax.cond((i_lo <= i) & (i <= i_hi), step, lambda c: c, carry), None

    init = (dq, jnp.zeros(k_j.shape, dt), jnp.zeros(v_j.shape, dt))
    (dq, dk_j, dv_j), _ = jax.lax.scan(query_block, init, jnp.arange(width))
    return dq, (dk_j, dv_j)

  xs = (jnp.arange(blk.nk), kb, vb, start, lo, hi)
  dq, (dkb, dvb) = jax.lax.scan(key_block, jnp.zeros_like(qb), xs)
  dq, dk, dv = ab.from_blocks(dq, blk.t), ab.from_blocks(dkb[:, :, :, None], blk.s), \
      ab.from_blocks(dvb[:, :, :, None], blk.s)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None, None, None


def _grad_step(blk, ex, i, j, q_i, g_i, r_i, t_i, k_j, v_j, carry):
  """Block (i, j) of the backward: each line one formula of the docstring."""
  dq, dk_j, dv_j = carry
  lse_i, delta_i, near_i = r_i[..., 0], r_i[..., 1], r_i[..., 2]
  s, dcap = ab.scores(blk, ex, i, j, q_i, k_j)
  p = jnp.exp(s - lse_i[..., None])                                         # P = exp(S − lse)
  dv_j = dv_j + ab.by_rows("bhrk,bhrd->bhkd", p, g_i)                       # dV += Pᵀ·dO (the group's sum)
  dp = ab.by_rows("bhrd,bhkd->bhrk", g_i, v_j)                              # dP = dO·Vᵀ
  at_top = j * blk.bk + jnp.arange(blk.bk) == t_i[..., None]
  ds = p * jnp.where(at_top, near_i[..., None], dp - delta_i[..., None])    # dS = P ∘ (dP − D)
  if dcap is not None:
    ds = ds * dcap                                                          # through the softcap
  dq = dq.at[i].add(ab.by_rows("bhrk,bhkd->bhrd", ds, k_j) * blk.scale)     # dQ += dS·K·scale
  dk_j = dk_j + ab.by_rows("bhrk,bhrd->bhkd", ds, q_i) * blk.scale          # dK += dSᵀ·Q·scale
  return dq, dk_j, dv_j


_attention = vjp_rule(attention, _attention_fwd, _attention_bwd, nondiff_argnums=(7,))


def _attention_ref(q, k, v, *, causal=False, mask=None, scale=None, window=None, softcap=None,
                   segment_ids=None, alibi_slopes=None, block_size=512):
  """softmax(scale·Q·Kᵀ)·V with the whole [B, H, T, S] matrix (K and V repeated over each group of query
  heads); a row with no key left outputs 0."""
  del block_size
  group = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
  if softcap is not None:
    s = softcap * jnp.tanh(s / softcap)
  dist = jnp.abs(jnp.arange(s.shape[-2])[:, None] - jnp.arange(s.shape[-1])[None, :])
  if alibi_slopes is not None:
    s = s - jax.lax.stop_gradient(jnp.asarray(alibi_slopes, s.dtype))[:, None, None] * dist.astype(s.dtype)
  ok = jnp.ones(s.shape[-2:], bool)
  if causal:
    ok = jnp.tril(ok)
  if window is not None:
    ok = ok & (dist < window)
  if segment_ids is not None:
    ok = ok & (segment_ids[0][:, None, :, None] == segment_ids[1][:, None, None, :])
  if mask is not None:
    ok = ok & mask
  s = jnp.where(ok, s, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf))  # S = 0: no key
  e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0))
  total = jnp.sum(e, axis=-1, keepdims=True)
  p = e / jnp.where(total > 0, total, 1)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v)


register(attention, _attention_ref, any_branch(BRANCHES), branches=BRANCHES,
         note="001 (softmax gate); FlashAttention-2")
