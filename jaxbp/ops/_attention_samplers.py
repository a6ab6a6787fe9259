"""The registry's samplers for ``attention``: one per branch of its code, each option alone and all at once."""

from typing import Any

import numpy as np

from jaxbp.ops._registry import uniform


def _sampler(lengths, block_sizes, causal=(False, True), masked=False, kv=None, window=None, softcap=False,
             segments=None, alibi=False):
  """Samples (q, k, v) and keywords: lengths T, S from ``lengths(rng)``, a block size from ``block_sizes``;
  ``kv`` "one" or "half" draws fewer kv heads than query heads, ``window`` a list of windows to draw from,
  ``segments`` "one" or "several" the number of segments, ``softcap`` and ``alibi`` switch those on."""
  def sample(rng, dtype):
    b, d = (int(n) for n in rng.integers(1, 3, size=2))
    h, kv_heads = _heads(rng, kv)
    t, s = lengths(rng)
    q = uniform(rng, (b, t, h, d), dtype)
    k, v = (uniform(rng, (b, s, kv_heads, d), dtype) for _ in range(2))
    kw: dict[str, Any] = {"causal": bool(rng.choice(causal)), "block_size": int(rng.choice(block_sizes))}
    if masked:
      shape = [(b, h, t, s), (1, 1, t, s), (t, s), (b, 1, t, 1)][rng.integers(0, 4)]
      m = rng.random(shape) < 0.7
      m[..., 0, :] = False  # query row 0 sees no key at all
      kw["mask"] = m
    if rng.random() < 0.3:
      kw["scale"] = float(rng.choice([0.5, 2.0]))
    if window is not None:
      kw["window"] = int(rng.choice(window))
    if softcap:
      kw["softcap"] = float(rng.choice([1.0, 3.0]))
    if segments is not None:
      kw["segment_ids"] = _segment_ids(rng, b, t, s, segments)
    if alibi:
      kw["alibi_slopes"] = np.asarray(rng.uniform(0.1, 1.0, size=h), dtype)
    return (q, k, v), kw
  return sample


def _heads(rng, kv):
  """(heads, kv_heads): equal, one kv head (multi-query) or half as many (grouped-query)."""
  if kv == "one":
    return int(rng.integers(2, 4)), 1
  if kv == "half":
    kv_heads = int(rng.integers(1, 3))
    return 2 * kv_heads, kv_heads
  h = int(rng.integers(1, 3))
  return h, h


def _segment_ids(rng, b, t, s, segments):
  """Sorted ids as packed sequences have them: one segment everywhere, or 2–3 segments per row."""
  if segments == "one":
    return np.zeros((b, t), np.int32), np.zeros((b, s), np.int32)
  return tuple(np.sort(rng.integers(0, 3, size=(b, n)), axis=1).astype(np.int32) for n in (t, s))


def _lengths(low, high, differ=False):
  def draw_lengths(rng):
    t, s = (int(n) for n in rng.integers(low, high + 1, size=2))
    return (t, s + 1 if s == t else s) if differ else (t, s)
  return draw_lengths


BRANCHES = {
    "T ≠ S, blocks that do not divide them": _sampler(_lengths(3, 5, differ=True), [2], causal=(False,)),
    "causal, T > S or T < S, skipped blocks": _sampler(_lengths(2, 5, differ=True), [1, 2], causal=(True,)),
    "mask with a fully masked row": _sampler(_lengths(2, 4), [2, 3], masked=True),
    "one block (block_size ≥ T, S)": _sampler(_lengths(1, 4), [8]),
    "T = 0 (no queries: an empty output, dK = dV = 0, as jnp)": _sampler(lambda rng: (0, 3), [2]),
    "S = 0 (no keys: every row fully masked, O = 0 and dQ = 0, as the reference)":
        _sampler(lambda rng: (3, 0), [2]),
    "multi-query (kv_heads 1)": _sampler(_lengths(3, 5), [2], kv="one"),
    "grouped-query (kv_heads = heads / 2)": _sampler(_lengths(3, 5), [2], kv="half"),
    "window smaller than a block": _sampler(_lengths(5, 7), [4], window=[1, 2]),
    "window larger than a block (skipped blocks on both sides)": _sampler(_lengths(6, 8), [1, 2], window=[3, 4]),
    "softcap": _sampler(_lengths(3, 5), [2], softcap=True),
    "segment ids, one segment": _sampler(_lengths(3, 5), [2], segments="one"),
    "segment ids, several segments": _sampler(_lengths(3, 5), [2], segments="several"),
    "ALiBi slopes": _sampler(_lengths(3, 5), [2], alibi=True),
    "every option at once (GQA, window, softcap, segments, ALiBi, mask, causal, scale)":
        _sampler(_lengths(4, 6), [2, 3], masked=True, kv="half", window=[2, 3], softcap=True,
                 segments="several", alibi=True),
}
