"""The block geometry of ``attention``'s rule: how queries and keys are cut, which blocks each pass visits,
and the scores of one block with every option applied. The formulas are in ``attention``'s docstring.

Queries live in blocks [n, B, kv_heads, group, b, D] (query head h = kv·group + g reads kv head kv), keys
and values in blocks [n, B, kv_heads, b, D]: a block's scores [B, kv_heads, group, bq, bk] come from one
einsum against the group's own K, which is never repeated. Each pass visits, for each outer block, only
the inner blocks that ``causal`` and ``window`` leave some pair in (a static number of them, ``width``),
so that a window makes the work grow as T·window.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Blocks(NamedTuple):
  """The static geometry and options: ``nq`` blocks of ``bq`` queries, ``nk`` blocks of ``bk`` keys."""
  t: int
  s: int
  bq: int
  nq: int
  bk: int
  nk: int
  heads: int
  kv_heads: int
  causal: bool
  scale: float
  window: int | None
  softcap: float | None

  @property
  def group(self) -> int:
    return self.heads // self.kv_heads


class Extras(NamedTuple):
  """The array options, cut for the blocks (``None`` where not given)."""
  mask: jax.Array | None    # bool [B|1, kv|1, group|1, T|1, S|1], padded with False to whole blocks
  seg_q: jax.Array | None   # int [nq, B, bq] segment id of each query
  seg_k: jax.Array | None   # int [nk, B, bk] segment id of each key
  slopes: jax.Array | None  # [1, kv, group, 1, 1] ALiBi slope of each query head


def to_blocks(x, b, n, group):
  """[B, L, H, D] → [n, B, H/group, group, b, D], zero-padded at the end of L to n·b."""
  bsz, length, h, d = x.shape
  x = jnp.pad(x, ((0, 0), (0, n * b - length), (0, 0), (0, 0)))
  return x.reshape(bsz, n, b, h // group, group, d).transpose(1, 0, 3, 4, 2, 5)


def kv_blocks(x, b, n):
  """[B, L, kv, D] → [n, B, kv, b, D]."""
  return to_blocks(x, b, n, 1)[:, :, :, 0]


def from_blocks(xb, length):
  """[n, B, kv, group, b, D] → [B, length, kv·group, D], dropping the padding."""
  n, bsz, kv, g, b, d = xb.shape
  return xb.transpose(1, 0, 4, 2, 3, 5).reshape(bsz, n * b, kv * g, d)[:, :length]


def rows_to_blocks(r, blk):
  """One value per query row and head, [B, H, T] → [nq, B, kv, group, bq]."""
  r = jnp.pad(r, ((0, 0), (0, 0), (0, blk.nq * blk.bq - blk.t)))
  return r.reshape(r.shape[0], blk.kv_heads, blk.group, blk.nq, blk.bq).transpose(3, 0, 1, 2, 4)


def rows_from_blocks(rb, t):
  """[nq, B, kv, group, bq] → [B, H, t]."""
  nq, bsz, kv, g, bq = rb.shape
  return rb.transpose(1, 2, 3, 0, 4).reshape(bsz, kv * g, nq * bq)[:, :, :t]


def extras(blk, mask, seg_q, seg_k, slopes, dtype):
  """The array options of ``attention`` (validated) cut for the blocks."""
  if mask is not None:
    pad_t = blk.nq * blk.bq - blk.t if mask.shape[2] > 1 else 0
    pad_s = blk.nk * blk.bk - blk.s if mask.shape[3] > 1 else 0
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad_t), (0, pad_s)))
    heads = (blk.kv_heads, blk.group) if mask.shape[1] > 1 else (1, 1)
    mask = mask.reshape(mask.shape[:1] + heads + mask.shape[2:])
  if seg_q is not None:
    seg_q = _cut(seg_q, blk.bq, blk.nq)
    seg_k = _cut(seg_k, blk.bk, blk.nk)
  if slopes is not None:
    slopes = slopes.astype(dtype).reshape(1, blk.kv_heads, blk.group, 1, 1)
  return Extras(mask, seg_q, seg_k, slopes)


def _cut(ids, b, n):
  """[B, L] → [n, B, b], padded (the padding is masked by position, its id never read)."""
  ids = jnp.pad(ids, ((0, 0), (0, n * b - ids.shape[1])))
  return ids.reshape(ids.shape[0], n, b).transpose(1, 0, 2)


def valid(blk, ex, i, j):
  """Which (query, key) pairs of block (i, j) take part, broadcastable to [B, kv, group, bq, bk]."""
  rows = i * blk.bq + jnp.arange(blk.bq)[:, None]
  cols = j * blk.bk + jnp.arange(blk.bk)[None, :]
  ok = cols < blk.s
  if blk.causal:
    ok = ok & (cols <= rows)
  if blk.window is not None:
    ok = ok & (jnp.abs(rows - cols) < blk.window)
  if ex.seg_q is not None:
    ok = ok & (ex.seg_q[i][:, None, None, :, None] == ex.seg_k[j][:, None, None, None, :])
  if ex.mask is not None:
    m = ex.mask
    if m.shape[3] > 1:
      m = jax.lax.dynamic_slice_in_dim(m, i * blk.bq, blk.bq, axis=3)
    if m.shape[4] > 1:
      m = jax.lax.dynamic_slice_in_dim(m, j * blk.bk, blk.bk, axis=4)
    ok = ok & m
  return ok


def scores(blk, ex, i, j, q_i, k_j):
  """The scores of block (i, j) and the softcap's derivative: scale·Q·Kᵀ, capped, less the ALiBi bias,
  −∞ where the pair does not take part; [B, kv, group, bq, bk]. The derivative is ``None`` without a cap."""
  s = jnp.einsum("bhgqd,bhkd->bhgqk", q_i, k_j) * blk.scale
  dcap = None
  if blk.softcap is not None:
    t = jnp.tanh(s / blk.softcap)
    s, dcap = blk.softcap * t, 1 - t * t
  if ex.slopes is not None:
    rows = i * blk.bq + jnp.arange(blk.bq)[:, None]
    cols = j * blk.bk + jnp.arange(blk.bk)[None, :]
    s = s - ex.slopes * jnp.abs(rows - cols).astype(s.dtype)
  return jnp.where(valid(blk, ex, i, j), s, -jnp.inf), dcap


def _span(first, last, low, high, causal_low, window):
  """The inner positions [lo, hi] that outer positions [first, last] may pair with."""
  lo, hi = low, high
  if causal_low is not None:
    lo = max(lo, causal_low)
  if window is not None:
    lo, hi = max(lo, first - window + 1), min(hi, last + window - 1)
  return lo, hi


def key_spans(blk):
  """Per query block i, the key blocks [lo_i, hi_i] that hold a pair ``causal`` and ``window`` allow."""
  spans = []
  for i in range(blk.nq):
    first, last = i * blk.bq, min(i * blk.bq + blk.bq, blk.t) - 1
    hi_causal = last if blk.causal else blk.s - 1
    lo, hi = _span(first, last, 0, min(blk.s - 1, hi_causal), None, blk.window)
    spans.append((lo // blk.bk, hi // blk.bk) if lo <= hi and first <= last else (0, -1))
  return _plan(spans, blk.nk)


def query_spans(blk):
  """Per key block j, the query blocks [lo_j, hi_j] that hold a pair ``causal`` and ``window`` allow."""
  spans = []
  for j in range(blk.nk):
    first, last = j * blk.bk, min(j * blk.bk + blk.bk, blk.s) - 1
    lo, hi = _span(first, last, 0, blk.t - 1, first if blk.causal else None, blk.window)
    spans.append((lo // blk.bq, hi // blk.bq) if lo <= hi and first <= last else (0, -1))
  return _plan(spans, blk.nq)


def _plan(spans, n):
  """(start, lo, hi, width): each outer block visits inner blocks start + r for r < width (all in [0, n)),
  computing only those in [lo, hi]; width is the widest span, static."""
  width = max([1] + [hi - lo + 1 for lo, hi in spans])
  start = np.array([max(0, min(lo, n - width)) for lo, _ in spans], np.int32)
  lo, hi = (np.array(a, np.int32) for a in zip(*spans))
  return start, lo, hi, width
