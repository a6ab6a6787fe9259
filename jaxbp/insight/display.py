"""What a notebook shows for check_vjp's ``Report``, a training run's ``FitResult`` and the benchmark's
results: HTML tables, every string a user or a rule wrote escaped.

The classes call these lazily from their ``_repr_html_`` (``jaxbp.check``, ``jaxbp.train`` and
``jaxbp.bench`` import nothing from here at import time), so the picture of a result lives beside the
trace's, in one renderer (``tables.html_table``).
"""

import html
import re
from typing import TYPE_CHECKING, Any

from jaxbp.insight import tables

if TYPE_CHECKING:
  from jaxbp.check import Report
  from jaxbp.train import FitResult

_STYLE = ("<style>.jaxbp-result td,.jaxbp-result th{text-align:left;padding:2px 8px}"
          ".jaxbp-result .fail{color:#c0392b;font-weight:bold}.jaxbp-result .ok{color:#1e8449}"
          ".jaxbp-result .skip{color:#7f8c8d}</style>")
_STATUS = {"ok": '<span class="ok">ok</span>', "FAIL": '<span class="fail">FAIL</span>',
           "skipped": '<span class="skip">skipped</span>'}


def _box(heading: str, body: str) -> str:
  return f'<div class="jaxbp-result">{_STYLE}<b>{html.escape(heading)}</b><br>{body}</div>'


def _with_status(table: str) -> str:
  """Colours the status cells (exactly "ok", "FAIL", "skipped") of an escaped table."""
  return re.sub(r"<td>(ok|FAIL|skipped)</td>", lambda m: f"<td>{_STATUS[m[1]]}</td>", table)


def report_html(report: "Report") -> str:
  """A ``jaxbp.check.Report``: the verdict, then one row per check of each input (passed, failed or
  skipped, with the error against its tolerance, and where the largest error sits or what was raised),
  then the notes."""
  bad = report.failures
  verdict = (f"all {len(report.entries)} checks passed" if not bad
             else f"FAILED {len(bad)} of {len(report.entries)} checks")
  rows = []
  for e in report.entries:
    raised = e.detail.startswith("raised")
    rows.append([e.check, e.input, "ok" if e.passed else "FAIL", e.dtype,
                 "" if raised else f"{e.abs_err:.2e}", "" if raised else f"{e.rel_err:.2e}",
                 f"rtol {e.rtol:.0e}, atol {e.atol:.0e}", "" if e.passed else e.detail])
  rows += [[check, label, "skipped", "", "", "", "", why] for check, label, why in report.skipped]
  table = tables.html_table(["check", "input", "result", "dtype", "abs err", "rel err", "tolerance",
                             "detail"], rows)
  notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in report.notes)
  return _box(f"{report.kind}({report.name}): {verdict}",
              _with_status(table) + (f"<ul>{notes}</ul>" if notes else ""))


_EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "train_token_accuracy", "test_token_accuracy", "seconds")


def fit_html(result: "FitResult") -> str:
  """A ``jaxbp.train.FitResult``: one row per epoch (losses, accuracies in %, seconds), the compile time,
  and the number of layers whose gradient norms the history holds."""
  history = list(result.history)
  columns = [c for c in _EPOCH_COLUMNS if any(c in h for h in history)]
  rows = [[_epoch_cell(c, h.get(c)) for c in columns] for h in history]
  table = tables.html_table([c.replace("_", " ") for c in columns], rows)
  last = history[-1] if history else {}
  final = (f", final test accuracy {100 * last['test_accuracy']:.2f}%" if "test_accuracy" in last else "")
  norms = len(last.get("layer_grad_norms", ()))
  extra = f"<br>per-layer gradient norms of {norms} layers in each epoch's record" if norms else ""
  head = f"fit: {len(history)} epoch(s), compiled in {result.compile_seconds:.2f} s{final}"
  return _box(head, table + extra)


def _epoch_cell(column, value):
  if value is None:
    return ""
  if column == "epoch":
    return str(value)
  if "accuracy" in column:
    return f"{100 * value:.2f}%"
  return f"{value:.2f}" if column == "seconds" else f"{value:.4f}"


def timing_html(timing: Any) -> str:
  """A ``Timing`` of the benchmark: median and best time per call and every round, in ms."""
  ms = lambda s: f"{1e3 * s:.4f}"
  table = tables.html_table(["median ms", "best ms", "rounds"],
                            [[ms(timing.median), ms(timing.best), len(timing.rounds)]])
  rounds = ", ".join(ms(r) for r in timing.rounds)
  return _box("Timing (seconds per call, shown in ms)", f"{table}every round (ms): {html.escape(rounds)}")


def markdown_html(text: str) -> str:
  """The Markdown the benchmark prints (``## `` headings, pipe tables as ``tables.render`` writes them,
  paragraphs) as HTML, escaped; ``**bold**`` cells stay bold."""
  parts = []
  for block in text.strip().split("\n\n"):
    lines = block.splitlines()
    if block.startswith("## "):
      parts.append(f"<h3>{_inline(block[3:])}</h3>")
    elif lines and all(line.startswith("|") for line in lines) and len(lines) >= 2:
      head, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
      parts.append(tables.html_table(head, body).replace("\x01", "<b>").replace("\x02", "</b>"))
    else:
      parts.append("<p>" + "<br>".join(_inline(line) for line in lines) + "</p>")
  return f'<div class="jaxbp-result">{_STYLE}{"".join(parts)}</div>'


def _cells(line):
  cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
  return [re.sub(r"\*\*(.+?)\*\*", "\x01\\1\x02", c.strip().replace("\\|", "|")) for c in cells]  # bold, kept


def _inline(text):
  escaped = html.escape(text)
  escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
  return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
