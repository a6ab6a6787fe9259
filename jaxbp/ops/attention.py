"""Attention with FlashAttention's residuals: the output and one log-sum-exp per row, nothing of size T×S.

The forward walks over blocks of queries and, inside, over blocks of keys with an online log-sum-exp
(Milakov & Gimelshein's online softmax, Rabe & Staats, FlashAttention); the backward is FlashAttention-2's,
block by block, recomputing each block of probabilities from the saved log-sum-exp. Nothing the size of
the [T, S] score matrix is ever held: the memory of a training step grows as O(T + S), not O(T·S).
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import balanced_blocks
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import static_number


class _Blocks(NamedTuple):
  """How the T queries and S keys are cut: ``nq`` blocks of ``bq`` rows, ``nk`` blocks of ``bk`` keys."""
  t: int
  s: int
  bq: int
  nq: int
  bk: int
  nk: int
  causal: bool
  scale: float


def _to_blocks(x, b, n):
  """[B, L, H, D] → [n, B, H, b, D], zero-padded at the end of L to n·b."""
  x = jnp.pad(x, ((0, 0), (0, n * b - x.shape[1]), (0, 0), (0, 0)))
  return x.reshape(x.shape[0], n, b, x.shape[2], x.shape[3]).transpose(1, 0, 3, 2, 4)


def _from_blocks(xb, length):
  """[n, B, H, b, D] → [B, length, H, D], dropping the padding."""
  n, bsz, h, b, d = xb.shape
  return xb.transpose(1, 0, 3, 2, 4).reshape(bsz, n * b, h, d)[:, :length]


def _mask_blocks(mask, blk):
  """The boolean mask [B|1, H|1, T|1, S|1] padded (with False) so that blocks can be sliced from it."""
  if mask is None:
    return None
  pad_t = blk.nq * blk.bq - blk.t if mask.shape[2] > 1 else 0
  pad_s = blk.nk * blk.bk - blk.s if mask.shape[3] > 1 else 0
  return jnp.pad(mask, ((0, 0), (0, 0), (0, pad_t), (0, pad_s)))


def _valid(blk, mask, i, j):
  """Which (query, key) pairs of block (i, j) take part: a real key, allowed by ``causal`` and ``mask``."""
  rows = i * blk.bq + jnp.arange(blk.bq)[:, None]
  cols = j * blk.bk + jnp.arange(blk.bk)[None, :]
  ok = cols < blk.s
  if blk.causal:
    ok = ok & (cols <= rows)
  if mask is not None:
    m = mask
    if m.shape[2] > 1:
      m = jax.lax.dynamic_slice_in_dim(m, i * blk.bq, blk.bq, axis=2)
    if m.shape[3] > 1:
      m = jax.lax.dynamic_slice_in_dim(m, j * blk.bk, blk.bk, axis=3)
    ok = ok & m
  return ok


def _unless_masked(blk, i, j, step, carry):
  """``step(carry)``, or ``carry`` unchanged where causality masks all of block (i, j) (its first key
  comes after its last query): the causal half of the blocks costs nothing."""
  if not blk.causal:
    return step(carry)
  return jax.lax.cond(j * blk.bk > i * blk.bq + blk.bq - 1, lambda c: c, step, carry)


def _scores(blk, mask, i, j, q_i, k_j):
  """S = scale·Q_i·K_jᵀ on block (i, j), −∞ where the pair does not take part; [B, H, bq, bk]."""
  s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j) * blk.scale
  return jnp.where(_valid(blk, mask, i, j), s, -jnp.inf)


# ------------------------------------------------------------------------------------------ attention

def attention(q: jax.typing.ArrayLike, k: jax.typing.ArrayLike, v: jax.typing.ArrayLike, *,
              causal: bool = False, mask: jax.typing.ArrayLike | None = None, scale: float | None = None,
              block_size: int = 512) -> jax.Array:
  """Scaled dot-product attention, blockwise: O = softmax(scale·Q·Kᵀ + masking)·V per batch and head.

  Forward, per batch b and head h: S = scale·Q·Kᵀ ([T, S]), S_ij = −∞ where query i may not see key j
  (``mask`` False, or j > i under ``causal``), P = softmax over j, O = P·V. It runs over blocks of queries
  and, inside, over blocks of keys with an online log-sum-exp: a running max m, sum ℓ = Σ exp(S − m)
  and accumulator A = Σ exp(S − m)·V are rescaled by exp(m_old − m_new) as each key block arrives, so
  that O = A/ℓ and lse = m + log ℓ at the end.

  Local Jacobian and VJP (FlashAttention-2's backward), with dO = g and per block (i, j):
  P_ij = exp(S_ij − lse_i) (recomputed), dV_j += P_ijᵀ·dO_i, dP_ij = dO_i·V_jᵀ, D_i = rowsum(dO_i ∘ O_i),
  dS_ij = P_ij ∘ (dP_ij − D_i), dQ_i += dS_ij·K_j·scale, dK_j += dS_ijᵀ·Q_i·scale. (D_i = Σ_j P_ij·dP_ij:
  the softmax Jacobian diag(p) − p·pᵀ applied to dP, without building it.) Blocks that ``causal`` masks
  entirely are skipped in both passes.

  Residuals: q, k, v (the inputs, which every backward needs), the output O and lse, one float per query
  row and head: O(T + S) memory. The [T, S] probabilities are never kept; autodiff of the plain
  reference keeps them (and the scores), O(T·S). The price is one more Q·Kᵀ product in the backward.

  Edge cases: a query row that no key may attend to (every entry of its mask False, or T > S under
  ``causal`` — never, see below) has an empty softmax; it outputs 0 and gets gradient 0, and passes none
  to k and v (its lse is stored as 0, a finite stand-in for log 0 that no unmasked entry ever reads).
  ``causal`` aligns the top-left corners: query i sees keys 0..i (``jnp.tril`` of a [T, S] matrix, as
  ``jax.nn.dot_product_attention(is_causal=True)``), so with T > S rows i ≥ S see every key. T ≠ S, T or S
  not a multiple of ``block_size`` (the last block is padded and the padding masked) and
  ``block_size`` ≥ T or S (one block) are all ordinary cases, and so are T = 0 (an empty output) and
  S = 0 (every row fully masked: O = 0, dQ = 0; one padded key block). Blocks are balanced: T = 600 with
  ``block_size`` 512 is two blocks of 300. Arithmetic runs in float32 at least (float64 stays float64).

  Args:
    q: float array [B, T, heads, Dh], the queries.
    k: float array [B, S, heads, Dh], the keys.
    v: float array [B, S, heads, Dv], the values; same dtype as q and k.
    causal: query i attends to keys j ≤ i only.
    mask: optional boolean array broadcastable to [B, heads, T, S]; False removes a (query, key) pair.
    scale: Python float multiplying the scores; default 1/√Dh.
    block_size: Python int ≥ 1, the most queries and keys per block.

  Returns:
    Array [B, T, heads, Dv] of q's dtype.

  Note: FlashAttention (Dao et al. 2022), FlashAttention-2 (Dao 2023); the softmax gate of note 001.
  """
  q, k, v = float_arrays("attention", q=q, k=k, v=v)
  blk, mask = _check_attention(q, k, v, causal, mask, scale, block_size)
  return _attention(q, k, v, mask, blk)


def _check_attention(q, k, v, causal, mask, scale, block_size):
  qs, ks, vs = q.shape, k.shape, v.shape
  for name, shape in (("q", qs), ("k", ks), ("v", vs)):
    if len(shape) != 4:
      raise ValueError(f"attention: argument '{name}' must be [B, length, heads, dim], got shape {shape}")
  if ks[:3] != vs[:3] or ks[0] != qs[0] or ks[2] != qs[2] or ks[3] != qs[3]:
    raise ValueError(f"attention: shapes do not fit q [B, T, heads, Dh], k [B, S, heads, Dh], "
                     f"v [B, S, heads, Dv]: got q {qs}, k {ks}, v {vs}")
  dtypes = {jnp.result_type(x) for x in (q, k, v)}
  if len(dtypes) > 1:
    raise TypeError(f"attention: q, k and v must share one dtype, got {sorted(map(str, dtypes))}")
  if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
    raise ValueError(f"attention: argument 'block_size' must be a Python int >= 1, got {block_size!r}")
  if scale is not None:
    scale = static_number("attention", "scale", scale)
  if not isinstance(causal, bool):
    raise TypeError(f"attention: argument 'causal' must be a bool, got {causal!r}")
  if mask is not None:
    mask = _check_mask(mask, (qs[0], qs[2], qs[1], ks[1]))
  bq, nq = balanced_blocks(qs[1], int(block_size))
  bk, nk = balanced_blocks(ks[1], int(block_size))
  factor = 1.0 / math.sqrt(qs[3]) if scale is None else scale
  return _Blocks(qs[1], ks[1], bq, nq, bk, nk, causal, factor), mask


def _check_mask(mask, full):
  if not hasattr(mask, "dtype") or jnp.result_type(mask) != jnp.bool_:
    got = f"dtype {mask.dtype}" if hasattr(mask, "dtype") else type(mask).__name__
    raise TypeError(f"attention: argument 'mask' must be a boolean array, got {got}")
  shape = jnp.shape(mask)
  try:
    np.broadcast_shapes(shape, full)
  except ValueError:
    raise ValueError(f"attention: argument 'mask' of shape {shape} does not broadcast to "
                     f"[B, heads, T, S] = {full}") from None
  if len(shape) > 4 or np.broadcast_shapes(shape, full) != full:
    raise ValueError(f"attention: argument 'mask' of shape {shape} does not broadcast to "
                     f"[B, heads, T, S] = {full}")
  return jnp.reshape(mask, (1,) * (4 - len(shape)) + tuple(shape))


def _compute_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32)


class _AttentionResiduals(NamedTuple):
  q: jax.Array     # [B, T, H, Dh] input: dK needs it
  k: jax.Array     # [B, S, H, Dh] input: dQ and the recomputed scores need it
  v: jax.Array     # [B, S, H, Dv] input: dP = dO·Vᵀ needs it
  mask: jax.Array | None  # the caller's boolean mask (no copy is made)
  o: jax.Array     # [B, T, H, Dv] output: D = rowsum(dO ∘ O)
  lse: jax.Array   # [B, H, T] log-sum-exp per query row: P = exp(S − lse) without a second max/sum


@functools.partial(jax.jit, static_argnums=(4,))  # one program per shape, also when called eagerly
def _attention_fwd(q, k, v, mask, blk):
  """O and its residuals: lse [B, H, T] by the online log-sum-exp over key blocks, per query block."""
  dt = _compute_dtype(q.dtype)
  qb, kb, vb = (_to_blocks(x.astype(dt), b, n)
                for x, b, n in ((q, blk.bq, blk.nq), (k, blk.bk, blk.nk), (v, blk.bk, blk.nk)))
  mb = _mask_blocks(mask, blk)

  def query_block(_, xs):
    i, q_i = xs
    bsz, h = q_i.shape[:2]
    init = (jnp.full((bsz, h, blk.bq), -jnp.inf, dt), jnp.zeros((bsz, h, blk.bq), dt),
            jnp.zeros((bsz, h, blk.bq, vb.shape[-1]), dt))

    def key_block(carry, ys):
      j, k_j, v_j = ys
      step = functools.partial(_online_step, blk, mb, i, j, q_i, k_j, v_j)
      return _unless_masked(blk, i, j, step, carry), None

    (m, ell, acc), _ = jax.lax.scan(key_block, init, (jnp.arange(blk.nk), kb, vb))
    seen = ell > 0
    o_i = jnp.where(seen[..., None], acc / jnp.where(seen, ell, 1)[..., None], 0)
    lse_i = jnp.where(seen, _finite(m) + jnp.log(jnp.where(seen, ell, 1)), 0)
    return None, (o_i, lse_i)

  _, (ob, lseb) = jax.lax.scan(query_block, None, (jnp.arange(blk.nq), qb))
  o = _from_blocks(ob, blk.t).astype(q.dtype)
  lse = lseb.transpose(1, 2, 0, 3).reshape(ob.shape[1], ob.shape[2], -1)[:, :, :blk.t]
  return o, _AttentionResiduals(q, k, v, mask, o, lse)


def _finite(m):
  """The running max with −∞ (a row that has seen no key yet) replaced by 0, so that exp(S − m) is 0."""
  return jnp.where(jnp.isfinite(m), m, 0)


def _online_step(blk, mb, i, j, q_i, k_j, v_j, carry):
  """One key block of the online softmax: rescale (ℓ, A) from the old max to the new one, add the block."""
  m, ell, acc = carry
  s = _scores(blk, mb, i, j, q_i, k_j)
  m_new = jnp.maximum(m, jnp.max(s, axis=-1))
  p = jnp.exp(s - _finite(m_new)[..., None])
  corr = jnp.exp(m - _finite(m_new))
  ell = ell * corr + jnp.sum(p, axis=-1)
  acc = acc * corr[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, v_j)
  return m_new, ell, acc


@functools.partial(jax.jit, static_argnums=(0,))
def _attention_bwd(blk, res, g):
  """FlashAttention-2's backward: outer loop over key blocks j (dK_j, dV_j), inner over query blocks i."""
  q, k, v, mask, o, lse = res
  dt = _compute_dtype(q.dtype)
  delta = jnp.sum(g.astype(dt) * o.astype(dt), axis=-1)                      # D = rowsum(dO ∘ O), [B, T, H]
  qb, gb = _to_blocks(q.astype(dt), blk.bq, blk.nq), _to_blocks(g.astype(dt), blk.bq, blk.nq)
  kb, vb = _to_blocks(k.astype(dt), blk.bk, blk.nk), _to_blocks(v.astype(dt), blk.bk, blk.nk)
  rows = _to_blocks(jnp.stack([lse.transpose(0, 2, 1), delta], -1), blk.bq, blk.nq)  # [nq, B, H, bq, 2]
  mb = _mask_blocks(mask, blk)

  def key_block(dq, xs):
    j, k_j, v_j = xs

    def query_block(carry, ys):
      i, q_i, g_i, r_i = ys
      step = functools.partial(_grad_step, blk, mb, i, j, q_i, g_i, r_i, k_j, v_j)
      return _unless_masked(blk, i, j, step, carry), None

    init = (dq, jnp.zeros_like(k_j), jnp.zeros_like(v_j))
    (dq, dk_j, dv_j), _ = jax.lax.scan(query_block, init, (jnp.arange(blk.nq), qb, gb, rows))
    return dq, (dk_j, dv_j)

  dq, (dkb, dvb) = jax.lax.scan(key_block, jnp.zeros_like(qb), (jnp.arange(blk.nk), kb, vb))
  dq, dk, dv = _from_blocks(dq, blk.t), _from_blocks(dkb, blk.s), _from_blocks(dvb, blk.s)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


def _grad_step(blk, mb, i, j, q_i, g_i, r_i, k_j, v_j, carry):
  """Block (i, j) of the backward: each line one formula of the docstring."""
  dq, dk_j, dv_j = carry
  lse_i, delta_i = r_i[..., 0], r_i[..., 1]
  p = jnp.exp(_scores(blk, mb, i, j, q_i, k_j) - lse_i[..., None])          # P = exp(S − lse)
  dv_j = dv_j + jnp.einsum("bhqk,bhqd->bhkd", p, g_i)                       # dV += Pᵀ·dO
  dp = jnp.einsum("bhqd,bhkd->bhqk", g_i, v_j)                              # dP = dO·Vᵀ
  ds = p * (dp - delta_i[..., None])                                        # dS = P ∘ (dP − D)
  dq = dq.at[i].add(jnp.einsum("bhqk,bhkd->bhqd", ds, k_j) * blk.scale)     # dQ += dS·K·scale
  dk_j = dk_j + jnp.einsum("bhqk,bhqd->bhkd", ds, q_i) * blk.scale          # dK += dSᵀ·Q·scale
  return dq, dk_j, dv_j


_attention = vjp_rule(attention, _attention_fwd, _attention_bwd, nondiff_argnums=(4,))


def _attention_ref(q, k, v, *, causal=False, mask=None, scale=None, block_size=512):
  """softmax(scale·Q·Kᵀ)·V with the whole [B, H, T, S] matrix; a row with no key left outputs 0."""
  del block_size
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
  if not causal and mask is None:
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
  ok = jnp.ones(s.shape[-2:], bool)
  if causal:
    ok = jnp.tril(ok)
  if mask is not None:
    ok = ok & mask
  s = jnp.where(ok, s, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf))  # S = 0: no key
  e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0))
  total = jnp.sum(e, axis=-1, keepdims=True)
  p = e / jnp.where(total > 0, total, 1)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def _attention_sampler(lengths, block_sizes, causal=(False, True), masked=False):
  """Samples (q, k, v) and keywords: lengths T, S from ``lengths(rng)``, a block size from ``block_sizes``."""
  def sample(rng, dtype):
    b, h, d = (int(n) for n in rng.integers(1, 3, size=3))
    t, s = lengths(rng)
    args = tuple(uniform(rng, (b, n, h, d), dtype) for n in (t, s, s))
    kw: dict[str, Any] = {"causal": bool(rng.choice(causal)), "block_size": int(rng.choice(block_sizes))}
    if masked:
      shape = [(b, h, t, s), (1, 1, t, s), (t, s), (b, 1, t, 1)][rng.integers(0, 4)]
      m = rng.random(shape) < 0.7
      m[..., 0, :] = False  # query row 0 sees no key at all
      kw["mask"] = m
    if rng.random() < 0.3:
      kw["scale"] = float(rng.choice([0.5, 2.0]))
    return args, kw
  return sample


def _lengths(low, high, differ=False):
  def draw_lengths(rng):
    t, s = (int(n) for n in rng.integers(low, high + 1, size=2))
    return (t, s + 1 if s == t else s) if differ else (t, s)
  return draw_lengths


_BRANCHES = {
    "T ≠ S, blocks that do not divide them": _attention_sampler(_lengths(3, 5, differ=True), [2], causal=(False,)),
    "causal, T > S or T < S, skipped blocks": _attention_sampler(_lengths(2, 5, differ=True), [1, 2], causal=(True,)),
    "mask with a fully masked row": _attention_sampler(_lengths(2, 4), [2, 3], masked=True),
    "one block (block_size ≥ T, S)": _attention_sampler(_lengths(1, 4), [8]),
    "T = 0 (no queries: an empty output, dK = dV = 0, as jnp)": _attention_sampler(lambda rng: (0, 3), [2]),
    "S = 0 (no keys: every row fully masked, O = 0 and dQ = 0, as the reference)":
        _attention_sampler(lambda rng: (3, 0), [2]),
}

register(attention, _attention_ref, any_branch(_BRANCHES), branches=_BRANCHES,
         note="001 (softmax gate); FlashAttention-2")
