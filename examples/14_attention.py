"""Attention block by block: the online log-sum-exp and FlashAttention-2's backward, on numbers you can follow.

One head, 3 queries and 3 keys of width 2, causal. ops.attention with block_size=1 sees one key at a time:
for query 2 it keeps a running max m, a running sum ℓ = Σ exp(s − m) and an accumulator A = Σ exp(s − m)·v,
rescaling both by exp(m_old − m_new) when a larger score arrives; the output is A/ℓ and the only thing
it keeps per row for the backward is lse = m + log ℓ. The table replays those steps for query 2 and
checks them against the softmax written out in full; then the backward's D = rowsum(dO ∘ O),
dS = P ∘ (dP − D) is checked against jax.grad of the plain reference. Exits 1 on any disagreement.

Run: python examples/14_attention.py
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

Q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
K = np.array([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]])
V = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
SCALE = 1.0  # chosen so the scores are the dot products themselves


def main() -> int:
  with jax.enable_x64(True):
    return _run()


def _online_rows(s):
  """The online softmax over the keys of one query row, one key at a time, as the rule runs it."""
  m, ell, acc, rows = -np.inf, 0.0, np.zeros(2), []
  for j, sj in enumerate(s):
    m_new = max(m, sj)
    corr = np.exp(m - m_new)
    ell = ell * corr + np.exp(sj - m_new)
    acc = acc * corr + np.exp(sj - m_new) * V[j]
    m = m_new
    rows.append([j, fmt(sj, 3), fmt(m, 3), fmt(corr, 4), fmt(ell, 4), fmt(acc, 4), fmt(acc / ell, 4)])
  return rows, acc / ell, m + np.log(ell)


def _run() -> int:
  q, k, v = (jnp.asarray(a)[None, :, None, :] for a in (Q, K, V))   # [B 1, T 3, heads 1, Dh 2]
  scores = Q @ K.T * SCALE
  rows, o2, lse2 = _online_rows(scores[2])
  print("query 2 (sees keys 0, 1, 2): running max m, rescale exp(m_old − m_new), ℓ, A, A/ℓ\n")
  print(render(["key j", "s_2j", "m", "rescale", "ℓ", "A", "A/ℓ"], rows), "\n")
  p_full = np.exp(scores[2] - scores[2].max()) / np.exp(scores[2] - scores[2].max()).sum()
  out = ops.attention(q, k, v, causal=True, scale=SCALE, block_size=1)
  g = jnp.asarray(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))[None, :, None, :]
  manual = jax.vjp(lambda q, k, v: ops.attention(q, k, v, causal=True, scale=SCALE, block_size=1), q, k, v)[1](g)
  auto = jax.grad(lambda q, k, v: jnp.sum(ops.reference.attention(q, k, v, causal=True, scale=SCALE) * g),
                  argnums=(0, 1, 2))(q, k, v)
  checks = [
      ("online A/ℓ = softmax(s_2)·V", o2, p_full @ V),
      ("lse_2 = log Σ exp(s_2j)", lse2, np.log(np.exp(scores[2]).sum())),
      ("ops.attention row 2 = A/ℓ", np.asarray(out)[0, 2, 0], o2),
      ("row 0 sees key 0 only: O_0 = V_0", np.asarray(out)[0, 0, 0], V[0]),
  ]
  checks += [(f"FlashAttention-2 d{n} = jax.grad's", np.ravel(a), np.ravel(b))
             for n, a, b in zip("qkv", manual, auto)]
  report = NoteCheck("the rule against the softmax written out and against jax.grad of the reference")
  for name, got, want in checks:
    report.add(name, want, got, 1e-10)
  print(report.report())
  return report.exit_code()

if __name__ == "__main__":
  sys.exit(main())
