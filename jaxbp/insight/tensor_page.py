"""The backward pass of a function of arrays in a browser: one self-contained page, one step per node.

``Trace.to_html()`` gives this page when an input is an array (``jaxbp.insight.html`` keeps the circuit
for numbers). Step 0 is the forward pass: every input with its shape, dtype and values, and L. Each
"Next" (or →) reaches one node, from L back to the inputs, and shows:

- its op and whether its backward is a hand-written rule or JAX's own;
- the shapes and dtypes of what flows in and out: the forward value z, the upstream gradient ∂L/∂z
  (z's shape), and per input x its value and the downstream gradient ∂L/∂x, which has x's shape: at a
  matmul a learner sees that dW has W's shape (note 001's matrix section);
- the values themselves: a table when at most 8×8, a heat map (blue negative, red positive) beyond;
- for a rule, its VJP formula from the docstring, the bytes its forward keeps for the backward beside
  what autodiff of its reference keeps, and a badge for ``check_vjp`` run on these inputs when the page
  was made (a failure is shown with its report).

The last step compares every input's gradient with ``jax.grad``. No network: style and script are inline.
"""

import html
import re

import jax
import numpy as np

from jaxbp.insight import rule_facts
from jaxbp.insight.tables import fmt

_TABLE_MAX = 8  # rows and columns of a value written out as a table
_HEAT_MAX = 48  # rows and columns of a heat map; larger arrays show their first _HEAT_MAX


def to_html(trace, title: str = "", decimals: int = 4, check: bool = True, captions=None, *,
            nodes=None, end: str = "") -> str:
  """The page for a ``Trace`` of a function of arrays.

  Args:
    trace: a ``jaxbp.insight.trace.Trace``.
    title: the function as text, heading the page.
    decimals: decimals of the numbers in tables.
    check: run ``check_vjp`` for every rule at its inputs (once per rule and input shapes).
    captions: {node name: text (HTML)} written under that node's heading, e.g. a note's notation for it.
    nodes: the nodes to step through, in the order of the backward pass; default every node L depends
      on (a model's page gives its rule calls only, ``model_step.rule_calls``).
    end: HTML added to the last step (a model's memory chart).
  """
  order = list(nodes) if nodes is not None else [n for n in reversed(trace.nodes) if n.upstream is not None]
  known = {}
  sections = [_forward_section(trace, decimals)]
  for k, node in enumerate(order, 1):
    key = (node.op, tuple(shape_text(a) for a in node.args))
    if node.manual and key not in known:  # one check per rule and input shapes
      known[key] = rule_facts.facts(node, check)
    sections.append(_node_section(node, k, len(order), known.get(key), decimals, (captions or {}).get(node.name)))
  sections.append(_done_section(trace, len(order) + 1, decimals, end))
  chips = "".join(f'<span class="chip{" rule" if n.manual else ""}" id="chip-{i}">{html.escape(n.name)} = '
                  f"{html.escape(n.op)} {shape_text(n.value)}</span>" for i, n in enumerate(order, 1))
  heading = html.escape(title or "L")
  intro = (f'L = {fmt(trace.output, decimals)}. Each step reaches one node, from L back to the inputs: its '
           '<span class="up">upstream</span> gradient ∂L/∂z has z\'s shape, and the <span class="down">downstream'
           "</span> gradient ∂L/∂x it sends to each input has that input's shape (note 001).")
  return step_page(f"backprop of {title or 'L'}", f"Backpropagation, tensor by tensor: L = <code>{heading}</code>",
                   intro, sections, chips)


def section(k: int, heading: str, body: str) -> str:
  """Step ``k`` of a ``step_page`` (HTML ``heading`` and ``body``); step 0 is shown first."""
  return f'<section class="step" data-step="{k}"{" hidden" if k else ""}><h2>{heading}</h2>{body}</section>'


def step_page(title: str, heading: str, intro: str, sections, chips: str = "") -> str:
  """A self-contained page showing one of ``sections`` (made by ``section``, numbered 0, 1, …) at a time,
  stepped by Previous/Next and the arrow keys; ``chips`` (elements with ids ``chip-1``, …) mark the steps
  reached. ``title`` is plain text; ``heading`` and ``intro`` are HTML."""
  return (_PAGE.replace("{{title}}", html.escape(title)).replace("{{heading}}", heading)
          .replace("{{intro}}", intro).replace("{{chips}}", chips)
          .replace("{{sections}}", "\n".join(sections)).replace("{{n}}", str(len(sections) - 1)))


def shape_text(x) -> str:
  """``float32[2, 3]``: the dtype and shape, as a tensor's type reads (several, for a tuple)."""
  if isinstance(x, (tuple, list)):
    return ", ".join(shape_text(v) for v in x)
  dtype, shape = getattr(x, "dtype", None), getattr(x, "shape", None)  # a PRNG key has no NumPy form
  if dtype is None or shape is None:
    a = np.asarray(x)
    dtype, shape = a.dtype, a.shape
  return f"{dtype}{list(shape)}"


def array_html(x, decimals: int = 4) -> str:
  """A value as HTML: a number, a table (at most 8×8 after folding leading axes), or a heat map."""
  if x is None:
    return '<span class="none">— (no gradient)</span>'
  if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.extended):  # a PRNG key: its type only
    return f"<span>{html.escape(shape_text(x))}</span>"
  a = np.asarray(x)
  if a.ndim == 0:
    return f'<span class="num">{fmt(a, decimals)}</span>'
  m = a.reshape(1, -1) if a.ndim == 1 else a.reshape(-1, a.shape[-1])
  if not np.issubdtype(m.dtype, np.number) and m.dtype != bool:
    return f"<span>{html.escape(str(a))}</span>"
  if m.shape[0] <= _TABLE_MAX and m.shape[1] <= _TABLE_MAX:
    rows = "".join("<tr>" + "".join(f"<td>{fmt(v, decimals)}</td>" for v in row) + "</tr>" for row in m)
    return f'<table class="vals">{rows}</table>'
  return _heat_map(m, decimals)


def _heat_map(m, decimals):
  """A 2-D array as an inline SVG of coloured cells, scaled by max |v| (blue < 0 < red)."""
  shown = np.asarray(m[:_HEAT_MAX, :_HEAT_MAX], np.float64)
  scale = float(np.max(np.abs(shown[np.isfinite(shown)]), initial=0.0)) or 1.0
  cell = max(3, min(18, 320 // max(shown.shape)))
  rects = []
  for (i, j), v in np.ndenumerate(shown):
    t = 0.0 if not np.isfinite(v) else max(-1.0, min(1.0, v / scale))
    fill = (f"rgb({255},{int(255 * (1 - t))},{int(255 * (1 - t))})" if t >= 0 else
            f"rgb({int(255 * (1 + t))},{int(255 * (1 + t))},255)")
    rects.append(f'<rect x="{j * cell}" y="{i * cell}" width="{cell}" height="{cell}" fill="{fill}"/>')
  w, h = shown.shape[1] * cell, shown.shape[0] * cell
  cut = (f", the first {shown.shape[0]}×{shown.shape[1]} of {m.shape[0]}×{m.shape[1]}"
         if shown.shape != m.shape else "")
  return (f'<div class="heat"><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
          f'viewBox="0 0 {w} {h}" style="max-width:100%;height:auto">{"".join(rects)}</svg>'
          f"<br><small>heat map{cut}: max |v| = {fmt(scale, decimals)} (blue negative, red positive)"
          "</small></div>")


def _card(label, x, decimals, note=""):
  return (f'<div class="card"><div class="what">{label} <code class="shape">{shape_text(x) if x is not None else ""}'
          f"</code>{note}</div>{array_html(x, decimals)}</div>")


def _forward_section(trace, decimals):
  cards = "".join(_card(f"input <b>{html.escape(name)}</b>", x, decimals) for name, x in trace.inputs.items())
  return section(0, f"The forward pass: L = {fmt(trace.output, decimals)}",
                 "<p>The inputs, with their shapes and values. Press <b>Next</b> (or →) to start the backward pass "
                 f'with ∂L/∂L = 1.</p><div class="cards">{cards}</div>')


def _node_section(node, k, n, facts, decimals, caption):
  who = "a hand-written rule (jaxbp.ops)" if node.manual else "JAX's own rule (a primitive)"
  reads = ", ".join(html.escape(x) for x in node.inputs)
  heading = f"Step {k} of {n + 1}: node {html.escape(node.name)} = {html.escape(node.op)}({reads})"
  head = f"<p>Its backward is {who}.</p>"
  if caption:
    head += f'<p class="caption">{caption}</p>'
  parts = [head, _facts_html(facts) if facts is not None else "", '<div class="cards">']
  several = len(node.outputs) > 1
  for name, value, up in zip(node.outputs, node.value if several else (node.value,),
                             node.upstream if several else (node.upstream,)):
    parts.append(_card(f"forward value <b>{html.escape(name)}</b>", value, decimals))
    parts.append(_card(f'<span class="up">upstream ∂L/∂{html.escape(name)}</span>', up, decimals,
                       "" if up is not None else " (L does not read it)"))
  for name, x, down in zip(node.inputs, node.args, node.downstream):
    if down is None:
      continue
    same = np.shape(down) == np.shape(x)
    note = (f' <span class="{"ok" if same else "fail"}">{"= the shape of " if same else "≠ the shape of "}'
            f"{html.escape(name)}</span>")
    parts.append(_card(f"input <b>{html.escape(name)}</b>", x, decimals))
    parts.append(_card(f'<span class="down">downstream ∂L/∂{html.escape(name)}</span>', down, decimals, note))
  parts.append("</div>" + _time_steps(node, decimals))
  return section(k, heading, "".join(parts))


# Nodes that loop over time, and the axis of their stacked output that is time: a scan's outputs are its
# final carries then its stacked ys (the last is one of those), the RNN and LSTM rules' first is hs.
_LOOPS = {"scan": 0, "rnn": 1, "lstm": 1}


def _time_steps(node, decimals):
  """For a loop (a ``lax.scan``, an RNN or LSTM rule): its steps inside, one expandable line each."""
  axis = _LOOPS.get(node.op)
  at = -1 if node.op == "scan" else 0
  out = node.value[at] if isinstance(node.value, tuple) else node.value
  up = node.upstream[at] if isinstance(node.upstream, tuple) else node.upstream
  if axis is None or np.ndim(out) <= axis:
    return ""
  steps = []
  for t in range(np.shape(out)[axis]):
    pick = lambda a, t=t: None if a is None else np.take(np.asarray(a), t, axis=axis)
    steps.append(f"<details><summary>step t = {t}</summary><div class=\"cards\">"
                 f"{_card(f'output at t = {t}', pick(out), decimals)}"
                 f"{_card(f'<span class=up>upstream at t = {t}</span>', pick(up), decimals)}</div></details>")
  return (f'<details class="loop"><summary>its {len(steps)} steps inside (one node for the whole loop; '
          f"the backward runs them from the last to the first)</summary>{''.join(steps)}</details>")


def _facts_html(facts):
  text = re.sub(r"^VJP(\s+is\b|:|,)?\s*", "", facts.formula).replace("``", "")
  out = [f'<p class="formula">VJP: <code>{html.escape(text)}</code></p>']
  if facts.rule_bytes is not None:
    auto = f"{facts.autodiff_bytes:,} bytes" if facts.autodiff_bytes is not None else "—"
    out.append(f'<p class="bytes">kept for the backward: the rule <b class="rule-bytes">{facts.rule_bytes:,} bytes'
               f'</b>, autodiff of its reference <b class="auto-bytes">{auto}</b></p>')
  if facts.check_passed is not None:
    badge = "ok" if facts.check_passed else "fail"
    word = "✓ check_vjp passed" if facts.check_passed else "✗ check_vjp FAILED"
    out.append(f'<details class="check"><summary><span class="badge {badge}">{word}</span> '
               f"{html.escape(rule_facts.summary(facts.check_text))}</summary>"
               f"<pre>{html.escape(facts.check_text)}</pre></details>")
  return "".join(out)


def _done_section(trace, k, decimals, end=""):
  rows = []
  for name, grad in trace.grads.items():
    auto = np.asarray(trace.autodiff[name])
    diff = float(np.max(np.abs(np.asarray(grad, np.float64) - auto), initial=0.0))
    rows.append(f"<tr><td>∂L/∂{html.escape(name)}</td><td><code>{shape_text(grad)}</code></td>"
                f"<td><code>{shape_text(trace.inputs[name])}</code></td><td>{diff:.1e}</td></tr>")
  cards = [_card(f"∂L/∂<b>{html.escape(n)}</b>", g, decimals) for n, g in trace.grads.items()]
  return section(k, "The backward pass is done",
                 "<p>Every input's gradient has the input's shape and equals jax.grad's:</p>"
                 '<table class="grads"><tr><th>gradient</th><th>shape</th><th>input\'s shape</th>'
                 f"<th>max |trace − jax.grad|</th></tr>{''.join(rows)}</table>"
                 f'{end}<div class="cards">{"".join(cards)}</div>')


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jaxbp: {{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; max-width: 100%; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; } code { background: #f4f6f7; padding: 0 .25em; }
#chips { display: flex; flex-wrap: wrap; gap: .3em; margin: .6em 0; }
.chip { border: 1px solid #aab7b8; border-radius: .8em; padding: .1em .6em; font-size: .85em; background: #fdfefe; }
.chip.rule { border-color: #1f618d; } .chip.current { background: #f9e79f; border-color: #c0392b; }
.chip.done { background: #fadbd8; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #d5dbdb; padding: .4em .6em; max-width: 100%; overflow-x: auto; }
.what { font-size: .9em; margin-bottom: .3em; }
table.vals { border-collapse: collapse; font-size: .8em; font-variant-numeric: tabular-nums; }
table.vals td { border: 1px solid #e5e8e8; padding: 1px 5px; text-align: right; }
table.grads td, table.grads th { padding: 2px 10px; text-align: left; }
.up { color: #1f618d; } .down { color: #c0392b; font-weight: bold; } .ok { color: #1e8449; } .fail { color: #c0392b; }
.badge { padding: 0 .5em; border-radius: .4em; color: white; } .badge.ok { background: #1e8449; }
.badge.fail { background: #c0392b; } .formula code { white-space: normal; }
.caption { background: #eafaf1; padding: .4em .6em; border-left: 4px solid #1e8449; }
pre { white-space: pre-wrap; font-size: .75em; } button { font-size: 1em; margin-right: .5em; padding: .3em 1em; }
</style></head>
<body>
<h1>{{heading}}</h1>
<p>{{intro}}</p>
<div><button id="prev" title="← key">◀ Previous</button><button id="next" title="→ key">Next ▶</button>
<span id="counter"></span></div>
<div id="chips">{{chips}}</div>
{{sections}}
<script>
(function () {
  const n = {{n}};
  let k = 0;
  const steps = document.querySelectorAll("section.step");
  function render() {
    steps.forEach((s) => { s.hidden = Number(s.dataset.step) !== k; });
    for (let i = 1; i < n; i++) {
      const c = document.getElementById("chip-" + i);
      if (c) { c.classList.toggle("current", i === k); c.classList.toggle("done", i < k); }
    }
    document.getElementById("counter").textContent = " step " + k + " of " + n;
  }
  function go(to) { k = Math.max(0, Math.min(n, to)); render(); }
  document.getElementById("next").onclick = () => go(k + 1);
  document.getElementById("prev").onclick = () => go(k - 1);
  document.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight") go(k + 1); else if (e.key === "ArrowLeft") go(k - 1);
  });
  render();
})();
</script>
</body></html>
"""
