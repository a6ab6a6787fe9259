"""Plain-text and Markdown tables: the trace's, and the examples' "note vs computed" comparisons.

One renderer for every table the project prints, so the trace, the CLI and every example script
line their numbers up the same way.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  from jaxbp.insight.trace import Trace

# Arrays with more elements than this print as dtype[shape] and their norm.
_MAX_SHOWN = 8


def fmt(x: Any, decimals: int = 4, floor: float = 0.0) -> str:
  """A number or a small array as text with ``decimals`` decimals; None as "—".

  A value too small to show any digit at that precision switches to scientific notation, so that
  0.000668 at 4 decimals reads 6.680e-04 rather than 0.0007, while 0.05 at 2 decimals stays 0.05.
  A value smaller in magnitude than ``floor`` (a round-off level, see ``noise_floor``) prints as the
  bound ``< 1e-13``: its digits are floating-point noise and differ from one CPU to the next.
  """
  if x is None:
    return "—"
  a = np.asarray(x)
  if a.dtype == object or not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
    return str(x)
  if a.size == 1 and a.ndim == 0:
    return _number(a.item(), decimals, floor)
  if a.size > _MAX_SHOWN:
    norm = float(np.linalg.norm(a.astype(np.float64).ravel()))
    return f"{a.dtype}{list(a.shape)} ‖·‖={_number(norm, decimals, floor)}"
  return _nested(a, decimals, floor)


def noise_floor(*values: Any) -> float:
  """The round-off level of ``values``: 100 ulps of the largest magnitude (at least 1), rounded up to a
  power of ten so that it reads the same on every machine (``1e-13`` for float64 numbers near 1).

  A difference below it says "equal up to round-off"; its digits depend on how the CPU summed
  (AVX2 and AVX-512 differ), so tables print it as a bound instead (``fmt(x, floor=...)``).
  """
  arrays = [np.asarray(v) for v in values]
  eps = max((float(np.finfo(a.dtype).eps) for a in arrays if np.issubdtype(a.dtype, np.inexact)),
            default=float(np.finfo(np.float64).eps))
  mags = [np.abs(a.astype(np.float64)) for a in arrays]
  scale = max([1.0] + [float(np.max(m, initial=0.0, where=np.isfinite(m))) for m in mags])
  return float(10.0 ** np.ceil(np.log10(100 * eps * scale)))


def bound(floor: float) -> str:
  """``floor`` as the bound a table prints: ``< 1e-13``."""
  return f"< {floor:.0e}"


def _nested(a, decimals, floor):
  if a.ndim == 0:
    return _number(a.item(), decimals, floor)
  return "[" + ", ".join(_nested(row, decimals, floor) for row in a) + "]"


def _number(v, decimals, floor=0.0):
  if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, np.integer)):
    return str(v)
  if abs(v) < floor:
    return bound(floor)
  if v == 0 or not np.isfinite(v) or abs(v) >= 10.0 ** (1 - decimals) or round(v, decimals) == v:
    if abs(v) >= 1e7:
      return f"{v:.{max(decimals - 1, 1)}e}"
    return f"{v:.{decimals}f}"
  return f"{v:.{max(decimals - 1, 1)}e}"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """``rows`` under ``headers`` as an HTML table (what a notebook shows)."""
  import html
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
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

NODE_HEADERS = ("node", "op", "value z", "upstream ∂L/∂z", "input x", "local ∂z/∂x",
                 "downstream ∂L/∂x")


# In the compact node table, arrays with more elements than this print as their shape and norm.
_COMPACT_SHOWN = 2


def _cell(x, decimals, full, jacobian=False):
  """A value of the node table: in full, or (``full=False``) an array beyond two elements, and every
  local Jacobian of more than one element, as ``shape ‖·‖=norm`` (``1×2×1×2 ‖·‖=0.4637``), so that the
  table fits a screen (note 004's 2-2-1 network in under 120 columns). No dtype: a trace's values share
  the inputs' precision."""
  a = None if x is None else np.asarray(x)
  if full or a is None or a.size <= (1 if jacobian else _COMPACT_SHOWN):
    return fmt(x, decimals)
  norm = float(np.linalg.norm(a.astype(np.float64).ravel()))
  return f"{'×'.join(str(n) for n in a.shape)} ‖·‖={_number(norm, decimals)}"


def node_rows(trace: "Trace", decimals: int, full: bool) -> list[list[str]]:
  rows = []
  for node in trace.nodes:
    op = node.op if node.manual else f"{node.op} (jax)"
    head = [node.name, op, _cell(node.value, decimals, full), _cell(node.upstream, decimals, full)]
    for i, name in enumerate(node.inputs or ("",)):
      local = node.local[i] if node.local else None
      down = node.downstream[i] if node.downstream else None
      rows.append(head + [name, _cell(local, decimals, full, jacobian=True), _cell(down, decimals, full)])
      head = ["", "", "", ""]
  return rows


def grad_rows(trace: "Trace", decimals: int, reference: dict | None) -> list[list[str]]:
  rows = []
  for name, g in trace.grads.items():
    row = [name, fmt(trace.inputs[name], decimals), fmt(g, decimals),
           fmt(trace.autodiff[name], decimals)]
    if reference is not None:
      row.append(fmt(reference.get(name), decimals))
    rows.append(row)
  return rows


def grad_headers(reference: dict | None) -> list[str]:
  headers = ["input", "value", "∂L/∂input (trace)", "jax.grad"]
  return headers + ["jax.grad of the references"] if reference is not None else headers


def trace_table(trace: "Trace", decimals: int = 4, reference: dict | None = None, markdown: bool = False,
                full: bool = False) -> str:
  """The trace's node table, then L and every input's gradient, as plain text or GitHub Markdown.

  ``reference``, if given, maps input names to gradients from another source (the CLI passes
  ``jax.grad`` of the same expression built from ``jaxbp.ops.reference``) for a last column.
  Markdown adds a heading over each table. Ops marked (jax) use JAX's own rule. The node table shows
  numbers and two-element arrays in full, and larger arrays and every local Jacobian of arrays (of
  shape ``z.shape + x.shape``) as shape and norm; ``full=True`` prints every element. The gradients'
  table always prints every element (up to eight; beyond, shape and norm).
  """
  nodes = render(NODE_HEADERS, node_rows(trace, decimals, full), markdown)
  grads = render(grad_headers(reference), grad_rows(trace, decimals, reference), markdown)
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

  def __init__(self, title: str, decimals: int = 6) -> None:
    self.title, self.decimals, self.failed = title, decimals, 0
    self.rows: list[list[str]] = []

  def add(self, quantity: str, note: Any, computed: Any, tol: float, remark: str = "",
          expect_differ: bool = False) -> bool:
    """Records ``quantity``; agreement means every element of |computed − note| ≤ tol.

    A difference below the round-off level (``noise_floor`` of the two) prints as a bound, and so does
    a computed value that small, so the table reads the same on every CPU.

    With ``expect_differ`` the two are meant to differ (a figure the note gets wrong, or a claim
    that must fail, ``remark`` says which): the row passes only if they differ beyond ``tol``, so the
    script still catches a change on either side. A computed value that is not finite (NaN, inf)
    fails either way: it differs from everything, so it would otherwise pass ``expect_differ``.
    """
    diff = np.max(np.abs(np.asarray(computed, np.float64) - np.asarray(note, np.float64)), initial=0.0)
    floor = noise_floor(note, computed)
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
    shown = fmt(computed, self.decimals, floor) if diff < floor else fmt(computed, self.decimals)
    self.rows.append([quantity, fmt(note, self.decimals), shown,
                      bound(floor) if diff < floor else f"{diff:.1e}", f"{tol:g}", status, remark])
    return ok

  def report(self) -> str:
    headers = ["quantity", "note / expected", "computed", "|diff|", "tolerance", "", "remark"]
    status = "all agree" if not self.failed else f"{self.failed} DISAGREE"
    return f"{self.title}\n{render(headers, self.rows)}\n→ {status}"

  def exit_code(self) -> int:
    return 1 if self.failed else 0
