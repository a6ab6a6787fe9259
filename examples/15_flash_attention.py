"""The blockwise backward, step by step: FlashAttention on T = 8 in blocks of 2, with every number.

One head, 8 queries and 8 keys of width 2, causal, blocks of 2 (so 4 × 4 blocks, 10 of them at or below
the diagonal). The forward runs each query block over its key blocks with an online log-sum-exp: a
running max m, a running sum ℓ = Σ exp(s − m) and an accumulator A = Σ exp(s − m)·V, rescaled by
exp(m_old − m_new) whenever a block raises the max; it ends with O = A/ℓ and keeps one number per row,
lse = m + log ℓ. The backward never holds the [8, 8] probabilities: block by block it recomputes
P = exp(S − lse) from the saved lse, and with D = rowsum(dO ∘ O) forms dS = P ∘ (dP − D), dQ, dK and dV.
The replay here (NumPy, float64) is checked against ops.attention(block_size=2) and against jax.grad of
the plain reference, and the floats each keeps for the backward are counted. Exits 1 on a disagreement.

With ``--html page.html`` it writes a page that steps through both passes block by block.

Run: python examples/15_flash_attention.py [--html page.html]
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight import rule_facts
from jaxbp.insight import tensor_page
from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

T, BLOCK, SCALE = 8, 2, 1.0
_rng = np.random.default_rng(15)
Q, K, V, DO = (np.round(_rng.normal(size=(T, 2)), 1) for _ in range(4))  # DO: the upstream gradient ∂L/∂O
NB = T // BLOCK


def blocks(i):
  return slice(i * BLOCK, (i + 1) * BLOCK)


def scores(i, j):
  """S_ij = scale·Q_i·K_jᵀ with −∞ where key > query (causal)."""
  s = Q[blocks(i)] @ K[blocks(j)].T * SCALE
  rows, cols = np.arange(T)[blocks(i)][:, None], np.arange(T)[blocks(j)][None, :]
  return np.where(cols <= rows, s, -np.inf)


def forward():
  """The online log-sum-exp, query block by query block: (O, lse, the record of every block step)."""
  out, lse, steps = np.zeros((T, 2)), np.zeros(T), []
  for i in range(NB):
    m, ell, acc = np.full(BLOCK, -np.inf), np.zeros(BLOCK), np.zeros((BLOCK, 2))
    for j in range(i + 1):  # causal: key blocks after i are skipped
      s = scores(i, j)
      m_new = np.maximum(m, s.max(axis=1))
      rescale = np.exp(m - m_new)
      p = np.exp(s - m_new[:, None])
      ell, acc = ell * rescale + p.sum(axis=1), acc * rescale[:, None] + p @ V[blocks(j)]
      steps.append(dict(i=i, j=j, S=s, m_old=m, m=m_new, rescale=rescale, ell=ell, A=acc))
      m = m_new
    out[blocks(i)], lse[blocks(i)] = acc / ell[:, None], m + np.log(ell)
  return out, lse, steps


def backward(out, lse):
  """FlashAttention-2's backward from the saved lse, key block by key block: (dQ, dK, dV, D, steps)."""
  d = np.sum(DO * out, axis=1)
  dq, dk, dv, steps = np.zeros((T, 2)), np.zeros((T, 2)), np.zeros((T, 2)), []
  for j in range(NB):
    for i in range(j, NB):
      p = np.exp(scores(i, j) - lse[blocks(i)][:, None])  # recomputed: exp(−∞) = 0 where masked
      dp = DO[blocks(i)] @ V[blocks(j)].T
      ds = p * (dp - d[blocks(i)][:, None])
      dv[blocks(j)] += p.T @ DO[blocks(i)]
      dq[blocks(i)] += ds @ K[blocks(j)] * SCALE
      dk[blocks(j)] += ds.T @ Q[blocks(i)] * SCALE
      steps.append(dict(i=i, j=j, P=p, dP=dp, dS=ds, dQ=dq[blocks(i)].copy(), dK=dk[blocks(j)].copy(),
                        dV=dv[blocks(j)].copy()))
  return dq, dk, dv, d, steps


def _rule(q, k, v):
  return ops.attention(q, k, v, causal=True, scale=SCALE, block_size=BLOCK)


def _reference(q, k, v):
  return ops.reference.attention(q, k, v, causal=True, scale=SCALE)


def floats_kept():
  """(the rule's, autodiff's) floats kept for the backward, beyond q, k and v themselves."""
  args = tuple(jnp.asarray(a)[None, :, None, :] for a in (Q, K, V))
  inputs = 3 * T * 2
  return tuple(rule_facts.residual_bytes(f, args) // 8 - inputs for f in (_rule, _reference))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
  parser.add_argument("--html", metavar="FILE", help="write the page that steps through both passes block by block")
  opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
  with jax.enable_x64(True):
    return _run(opts.html)


def _run(html_path):
  out, lse, fwd_steps = forward()
  dq, dk, dv, d, bwd_steps = backward(out, lse)
  q, k, v = (jnp.asarray(a)[None, :, None, :] for a in (Q, K, V))
  g = jnp.asarray(DO)[None, :, None, :]
  rule_out, pull = jax.vjp(_rule, q, k, v)
  auto = jax.grad(lambda q, k, v: jnp.sum(_reference(q, k, v) * g), argnums=(0, 1, 2))(q, k, v)
  rule_grads = pull(g)
  s = Q @ K.T * SCALE + np.where(np.tril(np.ones((T, T))) > 0, 0.0, -np.inf)
  kept_rule, kept_auto = floats_kept()
  print(f"T = {T}, blocks of {BLOCK}: {len(fwd_steps)} block steps forward, {len(bwd_steps)} backward\n")
  print(render(["row", "lse (online)", "log Σ exp(s) (full row)", "O (online)"],
               [[r, fmt(lse[r], 6), fmt(np.log(np.sum(np.exp(s[r]))), 6), fmt(out[r], 4)] for r in range(T)]), "\n")
  print(f"kept for the backward beyond q, k, v: the rule {kept_rule} floats (O, lse, O − V_t, top key), "
        f"autodiff of the reference {kept_auto} floats (bytes ÷ 8)\n")
  check = NoteCheck("the block-by-block replay against ops.attention and jax.grad of the plain reference")
  check.add("replay O = ops.attention(block_size=2)", np.ravel(rule_out), np.ravel(out), 1e-12)
  for name, replay, manual, ref in zip("QKV", (dq, dk, dv), rule_grads, auto):
    check.add(f"replay d{name} = ops.attention's VJP", np.ravel(manual), np.ravel(replay), 1e-12)
    check.add(f"replay d{name} = jax.grad of the reference", np.ravel(ref), np.ravel(replay), 1e-12)
  check.add("rule keeps O, O − V_t, lse, top: 2·T·Dv + 1.5·T", T * 2 * 2 + T + T // 2, kept_rule, 0)
  check.add("autodiff keeps at least the T·T probabilities", T * T, min(kept_auto, T * T), 0)
  print(check.report())
  if html_path:
    sections = [_intro()] + [_forward_step(k, st) for k, st in enumerate(fwd_steps, 1)]
    sections.append(_saved(len(sections), out, lse, d))
    sections += [_backward_step(len(sections) + k, st) for k, st in enumerate(bwd_steps)]
    sections.append(_end(len(sections), (dq, dk, dv), auto, (kept_rule, kept_auto)))
    page = tensor_page.step_page("FlashAttention block by block", "FlashAttention, block by block: T = 8, "
                                 "blocks of 2", _INTRO, sections)
    with open(html_path, "w", encoding="utf-8") as f:
      f.write(page)
    print(f"wrote {html_path}")
  return check.exit_code()


_INTRO = ("One head, causal. The forward runs each query block over its key blocks with an online log-sum-exp "
          "(running max m, running sum ℓ, accumulator A, rescaled when the max rises) and keeps one number per row, "
          "lse. The backward recomputes each block's probabilities from that lse: the [8, 8] matrix never exists. "
          "In the grid, query blocks run down and key blocks across: yellow is this step's block, pink the blocks "
          "done, grey the blocks the causal mask skips.")


def _grid(i, j, done=()):
  """The 4 × 4 blocks of the [8, 8] scores: (i, j) current, ``done`` visited, above the diagonal skipped."""
  cells = []
  for a in range(NB):
    for b in range(NB):
      fill = "#f9e79f" if (a, b) == (i, j) else "#fadbd8" if (a, b) in done else "#eee" if b > a else "#fdfefe"
      cells.append(f'<rect x="{b * 26}" y="{a * 26}" width="24" height="24" fill="{fill}" stroke="#888"/>')
  return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{NB * 26}" height="{NB * 26}" class="grid">'
          f'{"".join(cells)}</svg>')


def _cards(**arrays):
  return '<div class="cards">' + "".join(
      f'<div class="card"><div class="what"><b>{name}</b> <code>{list(np.shape(a))}</code></div>'
      f"{tensor_page.array_html(a, 4)}</div>" for name, a in arrays.items()) + "</div>"


def _intro():
  return tensor_page.section(0, "The inputs", "<p>Q, K, V [8, 2] and the upstream gradient dO = ∂L/∂O [8, 2]; "
                             "scores S = Q·Kᵀ, causal. Press <b>Next</b> (or →).</p>" + _cards(Q=Q, K=K, V=V, dO=DO))


def _forward_step(k, st):
  i, j = st["i"], st["j"]
  done = [(a, b) for a in range(i) for b in range(a + 1)] + [(i, b) for b in range(j)]
  text = (f"<p>Query block {i} (rows {2 * i}, {2 * i + 1}) meets key block {j}: running max m "
          f"{fmt(st['m_old'], 4)} → {fmt(st['m'], 4)}, so the old ℓ and A are rescaled by exp(m_old − m_new) = "
          f"{fmt(st['rescale'], 4)}; ℓ = ℓ·rescale + Σ exp(S − m) = {fmt(st['ell'], 4)}.</p>")
  return tensor_page.section(k, f"Forward, block ({i}, {j})", _grid(i, j, done) + text + _cards(
      S_ij=st["S"], m=st["m"], rescale=st["rescale"], ℓ=st["ell"], A=st["A"]))


def _saved(k, out, lse, d):
  text = ("<p>The backward starts from the saved O [8, 2] and lse [8] (24 floats), and D = rowsum(dO ∘ O) "
          "(D_i = Σ_j P_ij·dP_ij, the softmax Jacobian's correction). jaxbp's rule also keeps O − V_t and the index of "
          "each row's top key t (20 floats more), so that dP_it − D = −dO·(O − V_t) keeps its last digits where a "
          "row's softmax is nearly one-hot.</p>")
  return tensor_page.section(k, "The forward is done: O = A/ℓ, and lse = m + log ℓ is all it keeps",
                             text + _cards(O=out, lse=lse, D=d))


def _backward_step(k, st):
  i, j = st["i"], st["j"]
  text = (f"<p>Key block {j}, query block {i}: P = exp(S − lse) recomputed from the saved lse (never stored), "
          "dP = dO·Vᵀ, dS = P ∘ (dP − D); dV_j += Pᵀ·dO, dQ_i += dS·K_j, dK_j += dSᵀ·Q_i.</p>")
  return tensor_page.section(k, f"Backward, block ({i}, {j})", _grid(i, j) + text + _cards(
      P=st["P"], dP=st["dP"], dS=st["dS"], dQ_i=st["dQ"], dK_j=st["dK"], dV_j=st["dV"]))


def _end(k, replay, auto, kept):
  rows = "".join(f"<tr><td>d{n}</td><td>{float(np.max(np.abs(np.ravel(a) - np.ravel(b)))):.1e}</td></tr>"
                 for n, a, b in zip("QKV", replay, auto))
  return tensor_page.section(k, "The blockwise backward equals jax.grad of the plain attention",
                             f'<table class="grads"><tr><th>gradient</th><th>max |blockwise − jax.grad|</th></tr>'
                             f"{rows}</table><p class=\"bytes\">Kept for the backward beyond Q, K, V: the rule "
                             f'<b class="rule-floats">{kept[0]} floats</b> (O, lse, O − V_t, top key), '
                             "autodiff of the reference "
                             f'<b class="auto-floats">{kept[1]} floats</b> (bytes ÷ 8: it holds the [8, 8] '
                             "probabilities).</p>"
                             + _cards(dQ=replay[0], dK=replay[1], dV=replay[2]))


if __name__ == "__main__":
  sys.exit(main())
