"""Plain-text and Markdown tables: the trace's, and the examples' "note vs computed" comparisons.

One renderer for every table the project prints, so the trace, the CLI and every example script
line their numbers up the same way.
"""

import numpy as np

# Arrays with more elements than this print as dtype[shape] and their norm.
_MAX_SHOWN = 8


def fmt(x, decimals=4):
  """A number or a small array as text with ``decimals`` decimals; None as "—".

  A value too small to show any digit at that precision switches to scientific notation, so that
  0.000668 at 4 decimals reads 6.680e-04 rather than 0.0007, while 0.05 at 2 decimals stays 0.05.
  """
  if x is None:
    return "—"
  a = np.asarray(x)
  if a.dtype == object or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
    return str(x)
  if a.size == 1 and a.ndim == 0:
    return _number(a.item(), decimals)
  if a.size > _MAX_SHOWN:
    norm = float(np.linalg.norm(a.astype(np.float64).ravel()))
    return f"{a.dtype}{list(a.shape)} ‖·‖={_number(norm, decimals)}"
  return _nested(a, decimals)


def _nested(a, decimals):
  if a.ndim == 0:
    return _number(a.item(), decimals)
  return "[" + ", ".join(_nested(row, decimals) for row in a) + "]"


def _number(v, decimals):
  if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, np.integer)):
    return str(v)
  if v == 0 or not np.isfinite(v) or abs(v) >= 10.0 ** (1 - decimals) or round(v, decimals) == v:
    if abs(v) >= 1e7:
      return f"{v:.{max(decimals - 1, 1)}e}"
    return f"{v:.{decimals}f}"
  return f"{v:.{max(decimals - 1, 1)}e}"


def render(headers, rows, markdown=False):
  """Lines up ``rows`` (lists of strings or numbers) under ``headers`` as text or Markdown."""
  cells = [[str(c) for c in row] for row in rows]
  if markdown:
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)
  widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
  line = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
  rule = "  ".join("─" * w for w in widths)
  return "\n".join([line(headers), rule] + [line(r) for r in cells])


# --------------------------------------------------------------------------------------- the trace

_NODE_HEADERS = ("node", "op", "value z", "upstream ∂L/∂z", "input x", "local ∂z/∂x",
                 "downstream ∂L/∂x")


def _node_rows(trace, decimals):
  rows = []
  for node in trace.nodes:
    op = node.op if node.manual else f"{node.op} (jax)"
    head = [node.name, op, fmt(node.value, decimals), fmt(node.upstream, decimals)]
    for i, name in enumerate(node.inputs or ("",)):
      local = node.local[i] if node.local else None
      down = node.downstream[i] if node.downstream else None
      rows.append(head + [name, fmt(local, decimals), fmt(down, decimals)])
      head = ["", "", "", ""]
  return rows


def _grad_rows(trace, decimals, reference):
  rows = []
  for name, g in trace.grads.items():
    row = [name, fmt(trace.inputs[name], decimals), fmt(g, decimals),
           fmt(trace.autodiff[name], decimals)]
    if reference is not None:
      row.append(fmt(reference.get(name), decimals))
    rows.append(row)
  return rows


def _grad_headers(reference):
  headers = ["input", "value", "∂L/∂input (trace)", "jax.grad"]
  return headers + ["jax.grad of the references"] if reference is not None else headers


def trace_table(trace, decimals=4, reference=None, markdown=False):
  """The trace's node table, then L and every input's gradient, as plain text or GitHub Markdown.

  ``reference``, if given, maps input names to gradients from another source (the CLI passes
  ``jax.grad`` of the same expression built from ``jaxbp.ops.reference``) for a last column.
  Markdown adds a heading over each table. Ops marked (jax) use JAX's own rule.
  """
  nodes = render(_NODE_HEADERS, _node_rows(trace, decimals), markdown)
  grads = render(_grad_headers(reference), _grad_rows(trace, decimals, reference), markdown)
  loss = f"L = {fmt(trace.output, decimals)}"
  if markdown:
    return "\n".join(["### Nodes", "", nodes, "", loss, "", "### Gradients", "", grads, ""])
  return "\n".join([nodes, "", loss, "", grads])


# ------------------------------------------------------------------------------ note vs computed

class NoteCheck:
  """Collects a note's printed figures beside the computed ones and says whether they agree.

  Each ``add`` records one quantity: what the note writes, what jaxbp computes, and the tolerance the
  note's rounding allows. ``report()`` prints the table; ``exit_code()`` is 0 only if all agree.
  """

  def __init__(self, title, decimals=6):
    self.title, self.decimals, self.rows, self.failed = title, decimals, [], 0

  def add(self, quantity, note, computed, tol, remark="", expect_differ=False):
    """Records ``quantity``; agreement means every element of |computed − note| ≤ tol.

    With ``expect_differ`` the two are meant to differ (a figure the note gets wrong, or a claim
    that must fail, ``remark`` says which): the row passes only if they differ beyond ``tol``, so the
    script still catches a change on either side. A computed value that is not finite (NaN, inf)
    fails either way: it differs from everything, so it would otherwise pass ``expect_differ``.
    """
    diff = np.max(np.abs(np.asarray(computed, np.float64) - np.asarray(note, np.float64)))
    finite = bool(np.all(np.isfinite(np.asarray(computed, np.float64))))
    agree = bool(diff <= tol)
    ok = finite and agree != expect_differ
    self.failed += not ok
    if not finite:
      status = "NOT FINITE"
    elif expect_differ:
      status = "differs, as expected" if not agree else "UNEXPECTEDLY AGREES"
    else:
      status = "ok" if agree else "DIFFERS"
    self.rows.append([quantity, fmt(note, self.decimals), fmt(computed, self.decimals),
                      f"{diff:.1e}", f"{tol:g}", status, remark])
    return ok

  def report(self):
    headers = ["quantity", "note / expected", "computed", "|diff|", "tolerance", "", "remark"]
    status = "all agree" if not self.failed else f"{self.failed} DISAGREE"
    return f"{self.title}\n{render(headers, self.rows)}\n→ {status}"

  def exit_code(self):
    return 1 if self.failed else 0
