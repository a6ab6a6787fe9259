"""The picture of a trace: the computational graph as note 001 draws it, with matplotlib only.

Inputs sit on the left, each node in the column after the latest of its inputs, the loss on the right.
Every edge carries its forward value above it (black) and, below it in red, the gradient that flows
back along it: the downstream gradient ∂L/∂x its consumer sends to that input. No system package is
needed (no Graphviz); the figure is written as PNG or SVG by matplotlib's own backends, without pyplot,
so drawing never touches a global figure or backend.
"""

import os
import pathlib
from typing import TYPE_CHECKING, Any

from jaxbp.insight.tables import fmt

if TYPE_CHECKING:
  from jaxbp.insight.trace import Node
  from jaxbp.insight.trace import Trace

# How each op is written inside its circle; anything else is written by name.
SYMBOLS = {
    "add": "+", "multiply": "×", "mul": "×", "maximum": "max", "sigmoid": "σ", "logistic": "σ", "tanh": "tanh",
    "relu": "ReLU", "sub": "−", "div": "÷", "neg": "−x", "integer_pow": "xⁿ", "pow": "xʸ",
    "exp": "exp", "log": "log", "matmul": "@", "dot_general": "@",
    # jaxbp.ops' names for the same gates: written out, "subtract" and "power" spilled over the circle.
    "subtract": "−", "negative": "−x", "divide": "÷", "power": "xⁿ", "square": "x²",
}
_RED, _GREY, _NODE = "#c0392b", "#7f8c8d", "#eaf2f8"
# Data units: one row is 1; a column is _COL_WIDTH rows wide; the axes keep an equal aspect.
_COL_WIDTH, _ROW_HEIGHT, RADIUS, _INCH = 2.4, 1.0, 0.3, 0.95


def layout(trace: "Trace") -> tuple[dict[str, tuple[float, float]], list[tuple[str, str, int]]]:
  """Positions {point: (x, y)} of the inputs (column 0) and nodes, and the edges (src, dst, k).

  A point is an input's name, a node's ``name``, or ``"<node>:<k>"`` for a constant. A node's column
  is one more than its latest input's; its height is the mean of its inputs' heights, then spread
  apart so no two nodes in a column are closer than one row. A constant input (a number written in
  the function) gets its own point just left of the node reading it.
  """
  producer = _producers(trace)
  point = lambda value: producer[value].name if value in producer else value
  pos = {name: (0.0, float(i) * _ROW_HEIGHT) for i, name in enumerate(_inputs_in_use_order(trace))}
  column: dict = {name: 0 for name in pos}
  by_column: dict = {}
  for node in trace.nodes:
    known = [point(x) for x in node.inputs if x in pos or x in producer]
    column[node.name] = 1 + max((column[p] for p in known), default=0)
    by_column.setdefault(column[node.name], []).append(node)
  for col in sorted(by_column):
    _place_column(by_column[col], col, pos, point)
  edges = []
  for node in trace.nodes:
    x, y = pos[node.name]
    for k, value in enumerate(node.inputs):
      src = point(value)
      if src not in pos:  # a constant written in the function
        src = f"{node.name}:{k}"
        pos[src] = (x - 0.3 * _COL_WIDTH, y + 0.6)
      edges.append((src, node.name, k))
  return pos, edges


def loss_node(trace: "Trace") -> "Node | None":
  """The node computing L (not necessarily the last: a later step's value may go unused); None if
  L is an input or a constant."""
  return next((node for node in trace.nodes if "L" in node.outputs), None)


def _producers(trace):
  """{value name: the node computing it}, one entry per output of every node."""
  return {out: node for node in trace.nodes for out in node.outputs}


def _inputs_in_use_order(trace):
  order = []
  for node in trace.nodes:
    order += [x for x in node.inputs if x in trace.inputs and x not in order]
  return order + [x for x in trace.inputs if x not in order]


def _place_column(nodes, col, pos, point):
  """Places the nodes of one column at their inputs' mean height, at least one row apart."""
  entries = []
  for node in nodes:
    ys = [pos[point(x)][1] for x in node.inputs if point(x) in pos]
    entries.append((sum(ys) / len(ys) if ys else 0.0, node))
  entries.sort(key=lambda e: e[0])
  last = None
  for y, node in entries:
    if last is not None and y < last + _ROW_HEIGHT:
      y = last + _ROW_HEIGHT
    pos[node.name] = (col * _COL_WIDTH, y)
    last = y


def draw_trace(trace: "Trace", path: str | os.PathLike | None = None, decimals: int = 2, title: str = "") -> Any:
  """Draws ``trace``'s graph to ``path``; the format (``.png`` or ``.svg``) follows the suffix.

  Returns:
    The ``pathlib.Path`` written; without a path, the matplotlib ``Figure`` (nothing is written).
    ``title`` (the expression) heads the picture beside L's value.
  """
  from matplotlib.figure import Figure

  if path is not None:
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
      raise ValueError(f"draw: path must end in .png or .svg, got {str(path)!r}")
  pos, edges = layout(trace)
  xs = [p[0] for p in pos.values()] + [max(p[0] for p in pos.values()) + 0.45 * _COL_WIDTH]
  ys = [p[1] for p in pos.values()]
  # Room on the left for the inputs' gradients ("∂L/∂x = 64.00 + 16.00 = 80.00"): about 0.085 units a character.
  widest = max((len(f"{fmt(g, decimals)}") * (1 + sum(1 for n in trace.nodes for r in n.inputs if r == name))
                for name, g in trace.grads.items()), default=0)
  x0, x1, y0, y1 = min(xs) - max(0.7, 0.085 * (widest + 8)), max(xs) + 0.4, min(ys) - 0.8, max(ys) + 0.9
  fig = Figure(figsize=(_INCH * (x1 - x0), _INCH * (y1 - y0) + 0.5))
  ax = fig.add_axes((0, 0, 1, (y1 - y0) / (y1 - y0 + 0.5 / _INCH)))
  ax.set_xlim(x0, x1)
  ax.set_ylim(y1, y0)
  ax.set_aspect("equal")
  ax.axis("off")
  nodes = {n.name: n for n in trace.nodes}
  values = trace.values()
  fan_out: dict = {}
  for src, _, _ in edges:
    fan_out[src] = fan_out.get(src, 0) + 1
  placed = [pos[name] for name in nodes]  # label centres so far (and the nodes): a new one keeps clear
  for src, dst, k in edges:
    # Edges that leave one input meet at their source, those into one node at their target:
    # label each where it is alone, then slide it along its edge until it clears every other label.
    t = _clear_spot(pos[src], pos[dst], 0.5 if src in nodes else (0.3 if fan_out[src] == 1 else 0.68), placed)
    read = nodes[dst].inputs[k]
    if read in values:
      value, grad = values[read], nodes[dst].downstream[k]
    else:  # a constant: its value is its label, and no gradient is asked of it
      value = grad = ""
    _edge(ax, pos[src], pos[dst], value, grad, decimals, src in nodes, t)
  for name, (x, y) in pos.items():
    _point(ax, name, x, y, nodes, trace, decimals)
  out = loss_node(trace)
  if out is not None:
    x, y = pos[out.name]
    end = x + 0.4 * _COL_WIDTH
    _edge(ax, (x, y), (end, y), trace.output, 1.0, decimals, True, 0.45, arrow_end=True)
    ax.text(end + 0.05, y, "L", va="center", ha="left", fontsize=13, fontweight="bold")
  heading = f"L = {title} = {fmt(trace.output, decimals)}" if title else f"L = {fmt(trace.output, decimals)}"
  fig.suptitle(f"{heading}    forward values in black, gradients ∂L/∂· in red", fontsize=11, y=0.98)
  if path is None:
    return fig
  fig.savefig(path, dpi=150 if path.suffix.lower() == ".png" else 72)
  return path


def to_dot(trace: "Trace", decimals: int = 2) -> str:
  """The graph in Graphviz's DOT language: inputs as boxes, nodes as circles, every edge labelled with
  its forward value and, in red, the gradient flowing back along it."""
  producer = _producers(trace)
  nodes = {n.name: n for n in trace.nodes}
  quote = lambda s: '"' + str(s).replace('"', '\\"') + '"'
  lines = ["digraph backprop {", "  rankdir=LR;", f"  label={quote(f'L = {fmt(trace.output, decimals)}')};"]
  for name in trace.inputs:
    lines.append(f"  {quote(name)} [shape=box];")
  for node in trace.nodes:
    lines.append(f"  {quote(node.name)} [shape=circle, label={quote(SYMBOLS.get(node.op, node.op))}, "
                 f"xlabel={quote(node.name)}];")
  values = trace.values()
  for node in trace.nodes:
    for k, read in enumerate(node.inputs):
      src = producer[read].name if read in producer else read
      if src not in trace.inputs and src not in nodes:
        src = f"{node.name}:{read}"
        lines.append(f"  {quote(src)} [shape=plaintext, label={quote(read)}];")
      grad = fmt(node.downstream[k], decimals) if node.downstream[k] is not None and read in values else ""
      value = fmt(values[read], decimals) if read in values else read
      lines.append(f"  {quote(src)} -> {quote(node.name)} [label=<{value}<br/><font color=\"#c0392b\">{grad}</font>>];")
  out = loss_node(trace)
  if out is not None:
    lines += ['  "L " [shape=plaintext, label="L"];', f'  {quote(out.name)} -> "L " [label="1"];']
  return "\n".join(lines + ["}"]) + "\n"


def _clear_spot(p, q, t, placed):
  """The fraction along p → q nearest ``t`` whose point keeps clear of every point in ``placed`` (a label
  is about one unit wide and half a row high); appends the point chosen to ``placed``."""
  tries = sorted((c / 20 for c in range(3, 18)), key=lambda c: abs(c - t))
  point = lambda c: (p[0] + c * (q[0] - p[0]), p[1] + c * (q[1] - p[1]))
  clear = lambda c: all(abs(point(c)[0] - x) > 0.9 * _ROW_HEIGHT or abs(point(c)[1] - y) > 0.5 * _ROW_HEIGHT
                        for x, y in placed)
  best = next((c for c in [t, *tries] if clear(c)), t)
  placed.append(point(best))
  return best


def _edge(ax, p, q, value, grad, decimals, from_node, t=0.5, arrow_end=False):
  """One edge p → q with its forward value above and its gradient below, in red."""
  start = (p[0] + (RADIUS if from_node else 0.12), p[1])
  end = (q[0] - (RADIUS if not arrow_end else 0), q[1])
  ax.annotate("", xy=end, xytext=start,
              arrowprops=dict(arrowstyle="-|>", color="black", lw=1.1, shrinkA=0, shrinkB=0))
  mx, my = start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])
  ax.text(mx, my - 0.08, fmt(value, decimals), ha="center", va="bottom", fontsize=10,
          color="black", bbox=dict(fc="white", ec="none", pad=0.3, alpha=0.8))
  ax.text(mx, my + 0.08, fmt(grad, decimals), ha="center", va="top", fontsize=10,
          color=_RED, bbox=dict(fc="white", ec="none", pad=0.3, alpha=0.8))


def _point(ax, name, x, y, nodes, trace, decimals):
  """A node (circle with its op) or an input (its name) or a constant (its value, grey)."""
  from matplotlib.patches import Circle

  if name in nodes:
    node = nodes[name]
    ax.add_patch(Circle((x, y), RADIUS, fc=_NODE, ec="black", lw=1.2, zorder=3))
    symbol = SYMBOLS.get(node.op, node.op)
    ax.text(x, y, symbol, ha="center", va="center", zorder=4,
            fontsize=15 if len(symbol) <= 2 else 9 if len(symbol) <= 5 else 7)  # long names fit the circle
    ax.text(x, y + RADIUS + 0.05, name, ha="center", va="top", fontsize=8, color=_GREY)
  elif name in trace.inputs:
    ax.text(x + 0.08, y, name, ha="right", va="center", fontsize=13, fontweight="bold")
    if name in trace.grads:  # its gradient, and for an input read by several nodes the sum it came from
      parts = [n.downstream[k] for n in trace.nodes for k, read in enumerate(n.inputs)
               if read == name and n.downstream[k] is not None]
      total = fmt(trace.grads[name], decimals)
      text = " + ".join(fmt(g, decimals) for g in parts) + f" = {total}" if len(parts) > 1 else total
      ax.text(x + 0.08, y + 0.32, f"∂L/∂{name} = {text}", ha="right", va="center", fontsize=8, color=_RED)
  else:
    node, k = name.split(":")
    ax.text(x + 0.08, y, nodes[node].inputs[int(k)], ha="right", va="center", fontsize=10,
            color=_GREY)
