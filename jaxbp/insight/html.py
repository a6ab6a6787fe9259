"""The backward pass in a browser: one self-contained HTML page that steps through a trace node by node.

The page shows the graph as ``jaxbp.insight.draw`` lays it out (inline SVG, forward values on the
edges) and a panel. "Next" (or →) takes one step of the backward pass, from L back to the inputs:
the node it reaches is highlighted with note 001's three gradients: the *upstream* gradient ∂L/∂z
arriving at it, the *local* gradient ∂z/∂x of each input, and the *downstream* gradient
upstream × local that it sends back, which then appears in red under the edge it flows along. An
input's own gradient ∂L/∂x is filled in only once the pass has reached every node that reads it (for
an input read by several nodes, as the sum of what each sends). "Previous" (or ←) steps back, "Play"
(or the space bar) animates the pass. No network, no CDN: the script and the picture are inline.

Example::

  t = jaxbp.trace(f, w0=2.0, x0=-1.0, ...)
  pathlib.Path("backprop.html").write_text(t.to_html())

``jaxbp trace EXPR ... --html page.html`` writes the same page.
"""

import html
import json

import numpy as np

from jaxbp.insight import draw
from jaxbp.insight.tables import fmt

_SCALE = 110  # pixels per layout unit (one row)


def to_html(trace, title: str = "", decimals: int = 2, check: bool = True) -> str:
  """The page for ``trace`` as one string; ``title`` (e.g. the expression) heads it.

  A trace with an array among its inputs gets the tensor page (``jaxbp.insight.tensor_page``), which
  runs ``check_vjp`` for each rule unless ``check`` is False."""
  if any(np.ndim(x) for x in trace.inputs.values()):
    from jaxbp.insight import tensor_page
    return tensor_page.to_html(trace, title, decimals + 2, check)
  steps, edges, totals = _steps(trace, decimals)
  svg = _svg(trace, edges, totals, decimals)
  data = json.dumps({"steps": steps, "totals": totals, "loss": fmt(trace.output, decimals)})
  heading = html.escape(title or "L")
  return _PAGE.replace("{{title}}", heading).replace("{{svg}}", svg).replace(
      "{{data}}", data.replace("</", "<\\/")).replace("{{loss}}", fmt(trace.output, decimals))


def static_html(trace, decimals: int = 4) -> str:
  """A trace as notebooks show it (``Trace._repr_html_``): L, the graph with every gradient filled in,
  and the node and gradient tables as HTML tables; for a function of arrays, the tensor page in a frame."""
  from jaxbp.insight import tables
  if any(np.ndim(x) for x in trace.inputs.values()):  # arrays: the tensor page, in a frame, without checks
    from jaxbp.insight import tensor_page
    page = html.escape(tensor_page.to_html(trace, "L", decimals, check=False))
    return f'<iframe srcdoc="{page}" width="100%" height="560" style="border:1px solid #d5dbdb"></iframe>'
  steps, edges, totals = _steps(trace, 2)
  svg = _svg(trace, edges, totals, 2, filled=steps)
  nodes = tables.html_table(tables.NODE_HEADERS, tables.node_rows(trace, decimals, False))
  grads = tables.html_table(tables.grad_headers(None), tables.grad_rows(trace, decimals, None))
  style = "<style>.jaxbp-trace svg text{text-anchor:middle;font-size:13px}" + _STATIC_STYLE + "</style>"
  return (f'<div class="jaxbp-trace">{style}<b>L = {fmt(trace.output, decimals)}</b> '
          f"(forward values in black, gradients ∂L/∂· in red)<br>{svg}{nodes}<br>{grads}</div>")


_STATIC_STYLE = (".jaxbp-trace .edge{stroke:#222}.jaxbp-trace .grad,.jaxbp-trace .total{fill:#c0392b}"
                 ".jaxbp-trace circle{fill:#eaf2f8;stroke:#222}.jaxbp-trace .label,.jaxbp-trace .const{fill:#7f8c8d}"
                 ".jaxbp-trace .input,.jaxbp-trace .total,.jaxbp-trace .const{text-anchor:end}"
                 ".jaxbp-trace .input{font-weight:bold}")


def _steps(trace, decimals):
  """The backward steps (L's node first), the edges, and each input's gradient with the step it is due."""
  pos, edges = draw.layout(trace)
  nodes = {n.name: n for n in trace.nodes}
  order = [n for n in reversed(trace.nodes) if n.upstream is not None]
  step_of = {n.name: i + 1 for i, n in enumerate(order)}
  steps = []
  for node in order:
    sends = []
    for e, (_src, dst, k) in enumerate(edges):
      if dst != node.name or node.downstream[k] is None:
        continue
      sends.append({"edge": e, "input": node.inputs[k], "local": fmt(node.local[k], decimals),
                    "down": fmt(node.downstream[k], decimals)})
    steps.append({"node": node.name, "op": draw.SYMBOLS.get(node.op, node.op),
                  "upstream": fmt(node.upstream, decimals), "sends": sends})
  totals = {}
  for name, grad in trace.grads.items():
    parts = [(step_of.get(dst, 0), nodes[dst].downstream[k]) for src, dst, k in edges
             if src == name and nodes[dst].downstream[k] is not None]
    due = max((s for s, _ in parts), default=0)
    sum_text = " + ".join(fmt(g, decimals) for _, g in parts) if len(parts) > 1 else ""
    totals[name] = {"due": due, "grad": fmt(grad, decimals), "sum": sum_text}
  edge_rows = [{"src": src, "dst": dst, "k": k, "step": step_of.get(dst, 0)} for src, dst, k in edges]
  return steps, {"pos": pos, "list": edge_rows}, totals


def _svg(trace, edges, totals, decimals, filled=None):
  """The graph as inline SVG; gradient labels empty (the page's script fills them step by step) unless
  ``filled`` (the steps) asks for every gradient written in."""
  down = {d["edge"]: d["down"] for s in filled or () for d in s["sends"]}
  pos = edges["pos"]
  xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
  x0, y0 = min(xs) - 1.2, min(ys) - 0.9
  px = lambda x, y: ((x - x0) * _SCALE, (y - y0) * _SCALE)
  width = (max(xs) - x0 + 1.6) * _SCALE
  height = (max(ys) - y0 + 1.0) * _SCALE
  nodes = {n.name: n for n in trace.nodes}
  values = trace.values()
  # The viewBox lets the picture scale down to its container (max-width 100%) and keep its aspect.
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" style="max-width:100%;height:auto">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>']
  r = draw.RADIUS * _SCALE
  for e, row in enumerate(edges["list"]):
    (ax, ay), (bx, by) = px(*pos[row["src"]]), px(*pos[row["dst"]])
    ax += r if row["src"] in nodes else 8
    bx -= r
    read = nodes[row["dst"]].inputs[row["k"]]
    value = fmt(values[read], decimals) if read in values else ""
    t = 0.5 if row["src"] in nodes else 0.4  # near the input, where edges into one node are still apart
    mx, my = ax + t * (bx - ax), ay + t * (by - ay)
    parts.append(f'<line class="edge" id="e{e}" x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" '
                 'marker-end="url(#arrow)"/>')
    parts.append(f'<text class="fwd" x="{mx:.1f}" y="{my - 6:.1f}">{html.escape(value)}</text>')
    parts.append(f'<text class="grad" id="g{e}" x="{mx:.1f}" y="{my + 16:.1f}">{down.get(e, "")}</text>')
  for name, (x, y) in pos.items():
    cx, cy = px(x, y)
    if name in nodes:
      symbol = html.escape(draw.SYMBOLS.get(nodes[name].op, nodes[name].op))
      parts.append(f'<g class="node" id="n-{html.escape(name)}"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}"/>'
                   f'<text class="sym" x="{cx:.1f}" y="{cy + 6:.1f}">{symbol}</text>'
                   f'<text class="label" x="{cx:.1f}" y="{cy + r + 14:.1f}">{html.escape(name)}</text></g>')
    elif name in trace.inputs:
      parts.append(f'<text class="input" x="{cx:.1f}" y="{cy + 6:.1f}">{html.escape(name)}</text>')
      if name in totals:
        t = totals[name]
        text = f"∂L/∂{name} = {t['sum'] + ' = ' if t['sum'] else ''}{t['grad']}" if filled else ""
        parts.append(f'<text class="total" id="t-{html.escape(name)}" x="{cx:.1f}" y="{cy + 26:.1f}">'
                     f"{html.escape(text)}</text>")
    else:  # a constant written in the function
      node, k = name.split(":")
      parts.append(f'<text class="const" x="{cx:.1f}" y="{cy + 5:.1f}">'
                   f'{html.escape(nodes[node].inputs[int(k)])}</text>')
  out = draw.loss_node(trace)
  if out is not None:
    (ax, ay) = px(*pos[out.name])
    parts.append(f'<line class="edge" x1="{ax + r:.1f}" y1="{ay:.1f}" x2="{ax + r + 70:.1f}" y2="{ay:.1f}" '
                 'marker-end="url(#arrow)"/>')
    parts.append(f'<text class="fwd" x="{ax + r + 35:.1f}" y="{ay - 6:.1f}">{fmt(trace.output, decimals)}</text>')
    parts.append(f'<text class="grad" id="g-out" x="{ax + r + 35:.1f}" y="{ay + 16:.1f}">{"1" if filled else ""}'
                 "</text>")
    parts.append(f'<text class="input" x="{ax + r + 90:.1f}" y="{ay + 6:.1f}">L</text>')
  parts.append("</svg>")
  return "\n".join(parts)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jaxbp: backprop of {{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h1 code { background: #f4f6f7; padding: 0 .3em; }
svg text { text-anchor: middle; font-size: 14px; }
.edge { stroke: #222; stroke-width: 1.4; }
.fwd { fill: #222; } .grad { fill: #c0392b; font-weight: bold; }
.node circle { fill: #eaf2f8; stroke: #222; stroke-width: 1.5; }
.node.current circle { fill: #f9e79f; stroke: #c0392b; stroke-width: 3; }
.node.done circle { fill: #fadbd8; }
.sym { font-size: 18px; } .label { fill: #7f8c8d; font-size: 11px; }
.input { font-size: 17px; font-weight: bold; text-anchor: end; }
.total { fill: #c0392b; font-size: 13px; text-anchor: end; } .const { fill: #7f8c8d; text-anchor: end; }
#panel { margin-top: 1em; padding: .8em 1em; background: #fdfefe; border: 1px solid #d5dbdb; min-height: 4.5em;
         max-width: 60em; line-height: 1.5; }
#panel .up { color: #1f618d; } #panel .loc { color: #7d3c98; } #panel .down { color: #c0392b; font-weight: bold; }
button { font-size: 1em; margin-right: .5em; padding: .3em 1em; }
</style></head>
<body>
<h1>Backpropagation, node by node: L = <code>{{title}}</code></h1>
<p>Forward values in black above the edges (L = {{loss}}). Each step of the backward pass reaches one node:
its <span style="color:#1f618d">upstream</span> gradient ∂L/∂z times its
<span style="color:#7d3c98">local</span> gradient ∂z/∂x is the <span style="color:#c0392b">downstream</span>
gradient ∂L/∂x it sends back (note 001), drawn in red under the edge.</p>
<div>
<button id="prev" title="← key">◀ Previous</button><button id="next" title="→ key">Next ▶</button>
<button id="play" title="space bar">▶ Play</button><span id="counter"></span>
</div>
{{svg}}
<div id="panel"></div>
<script id="trace-data" type="application/json">{{data}}</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const steps = data.steps, n = steps.length;
  let k = 0, timer = null;
  const el = (id) => document.getElementById(id);
  function render() {
    steps.forEach((s, i) => {
      const g = el("n-" + s.node);
      if (g) { g.classList.toggle("current", i + 1 === k); g.classList.toggle("done", i + 1 < k); }
      s.sends.forEach((d) => { el("g" + d.edge).textContent = i < k ? d.down : ""; });
    });
    const out = el("g-out"); if (out) out.textContent = k > 0 ? "1" : "";
    Object.entries(data.totals).forEach(([name, t]) => {
      const node = el("t-" + name);
      if (node) node.textContent = k >= t.due && k > 0 ? "∂L/∂" + name + " = " +
        (t.sum ? t.sum + " = " : "") + t.grad : "";
    });
    el("counter").textContent = " step " + k + " of " + n;
    const panel = el("panel");
    if (k === 0) {
      panel.innerHTML = "The forward pass is done: L = " + data.loss +
        ". Press <b>Next</b> (or →) to start the backward pass with ∂L/∂L = 1.";
      return;
    }
    const s = steps[k - 1];
    let text = "<b>Step " + k + ": node " + s.node + " (" + s.op + ")</b>, upstream " +
      "<span class='up'>∂L/∂" + s.node + " = " + s.upstream + "</span>";
    s.sends.forEach((d) => {
      text += "<br>to " + d.input + ": <span class='up'>" + s.upstream + "</span> × local <span class='loc'>∂" +
        s.node + "/∂" + d.input + " = " + d.local + "</span> = downstream <span class='down'>∂L/∂" + d.input +
        " = " + d.down + "</span>";
    });
    if (k === n) text += "<br>The backward pass is done: every input's gradient is filled in.";
    panel.innerHTML = text;
  }
  function go(to) { k = Math.max(0, Math.min(n, to)); render(); }
  function play() {
    if (timer) { clearInterval(timer); timer = null; el("play").textContent = "▶ Play"; return; }
    if (k === n) go(0);
    el("play").textContent = "❚❚ Pause";
    timer = setInterval(() => { if (k >= n) { play(); } else { go(k + 1); } }, 1200);
  }
  el("next").onclick = () => go(k + 1);
  el("prev").onclick = () => go(k - 1);
  el("play").onclick = play;
  document.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight") go(k + 1);
    else if (e.key === "ArrowLeft") go(k - 1);
    else if (e.key === " ") { e.preventDefault(); play(); }
  });
  render();
})();
</script>
</body></html>
"""
