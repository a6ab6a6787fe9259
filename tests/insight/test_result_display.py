"""What a notebook shows for check_vjp's Report, a fit's FitResult and the benchmark's results: HTML
tables with the checks' names and the numbers, and every string a user or a rule wrote escaped."""

import re

import jax.numpy as jnp

from jaxbp import check_vjp
from jaxbp import ops
from jaxbp.bench import _report
from jaxbp.bench import _timing
from jaxbp.check import Entry
from jaxbp.check import Report
from jaxbp.train import FitResult


def _cells(page):
  return re.findall(r"<td>(.*?)</td>", page)


def test_report_of_a_real_check_lists_every_check_as_passed():
  report = check_vjp(ops.sigmoid, ops.reference.sigmoid, jnp.array([-1.0, 0.5, 2.0]))
  page = report._repr_html_()
  assert f"all {len(report.entries)} checks passed" in page
  cells = _cells(page)
  for e in report.entries:
    assert e.check in cells and f"{e.abs_err:.2e}" in cells
  assert page.count('<span class="ok">ok</span>') == len(report.entries) and "FAIL" not in page


def test_report_shows_failures_skips_and_notes_escaped():
  bad = Entry("vjp", "input '<x>' (args[0])", "float32", 0.5, 0.25, 1e-4, 1e-6, False,
              "largest error at index (1,): got 1 & 2, expected <3>")
  good = Entry("forward", "output[0]", "float32", 0.0, 0.0, 1e-4, 1e-6, True)
  report = Report("f<script>alert(1)</script>", (good, bad), (("jacobian", "input 'x'", "J has > 10 entries"),),
                  ("residuals: 12 bytes <vs> 24",))
  page = report._repr_html_()
  assert "<script>" not in page and "f&lt;script&gt;alert(1)&lt;/script&gt;" in page
  assert "FAILED 1 of 2 checks" in page and '<span class="fail">FAIL</span>' in page
  assert "input &#x27;&lt;x&gt;&#x27; (args[0])" in page and "got 1 &amp; 2, expected &lt;3&gt;" in page
  assert "5.00e-01" in _cells(page) and "2.50e-01" in _cells(page)
  assert '<span class="skip">skipped</span>' in page and "J has &gt; 10 entries" in page
  assert "<li>residuals: 12 bytes &lt;vs&gt; 24</li>" in page


def test_fit_result_shows_one_row_per_epoch():
  history = [{"epoch": 1, "train_loss": 0.9123, "train_accuracy": 0.71, "test_loss": 0.5, "test_accuracy": 0.8,
              "seconds": 1.25, "layer_grad_norms": [0.1, 0.2, 0.3]},
             {"epoch": 2, "train_loss": 0.4567, "train_accuracy": 0.9, "test_loss": 0.3, "test_accuracy": 0.9725,
              "seconds": 1.5, "layer_grad_norms": [0.1, 0.2, 0.3]}]
  page = FitResult(None, history, 3.456)._repr_html_()
  assert "2 epoch(s), compiled in 3.46 s, final test accuracy 97.25%" in page
  assert "<th>train loss</th>" in page and "<th>test accuracy</th>" in page
  rows = re.findall(r"<tr>(.*?)</tr>", page)[1:]
  assert len(rows) == 2 and _cells(rows[1]) == ["2", "0.4567", "90.00%", "0.3000", "97.25%", "1.50"]
  assert "gradient norms of 3 layers" in page


def test_bench_results_show_the_report_tables_escaped():
  machine = {"cpu": "Cpu <R&D>", "cpu_count": 2, "backend": "cpu", "device": "TFRT_CPU_0", "jax": "0.10",
             "numpy": "2", "torch": "not used", "python": "3.12", "time": "now", "load_average": [1.0, 2.0, 3.0]}
  ceilings = [{"dtype": "float32", "rates": {"jnp.dot 64": 12.5}, "ceiling": 12.5}]
  results = _report.Results(machine=machine, ceilings=ceilings, notes=["a | b"])
  assert str(results) == _report.render(results)
  page = results._repr_html_()
  assert "Cpu &lt;R&amp;D&gt;" in page and "<R&D>" not in page
  assert "<h3>Machine and GEMM ceiling</h3>" in page
  assert ["float32", "jnp.dot 64", "12.5"] == _cells(page)[:3] and "<td><b>12.5</b></td>" in page
  timing = _timing.Timing(0.0015, 0.001, (0.0015, 0.001, 0.002))
  assert "1.5000" in _cells(timing._repr_html_()) and "every round (ms): 1.5000, 1.0000, 2.0000" in timing._repr_html_()
