"""The LLM section of the benchmark runs at toy sizes and compares each case with its baselines. No timing
asserted; the memory assertions hold at every size (a window never costs more than no window)."""

import jax
import pytest

from jaxbp import ops
from jaxbp.bench import _llm
from jaxbp.bench._compare import AUTODIFF
from jaxbp.bench._compare import MANUAL
from jaxbp.insight import cost


def test_tiny_llm_section_reports_each_case_against_its_baselines():
  rows = _llm.measure(tiny=True, rounds=2, target_s=0.001)
  assert [r["case"] for r in rows] == list(_llm.TINY)
  window, step = rows
  assert window["time_vs"] == "no window" and window["memory_vs"] == "jax.grad"
  assert set(window["temp_bytes"]) == {"manual", "jax.grad", "no window"} and set(window["ms"]) == {"manual",
                                                                                                   "no window"}
  assert window["memory_ratio"] == window["temp_bytes"]["manual"] / window["temp_bytes"]["jax.grad"]
  assert step["time_vs"] == "jax.grad" and all(v > 0 for v in step["ms"].values()) and step["time_ratio"] > 0
  text = _llm.render(rows)
  assert text.count("\n| ") == 3 and "| sliding window | window 8, T 64" in text and "vs no window" in text


def test_every_case_of_the_issue_is_in_the_full_table():
  names = [c.name for c in _llm._cases(False)]
  assert names == ["GQA attention", "sliding window", "softcap", "ALiBi", "segment ids", "Llama MLP block",
                   "RoPE on q and k", "linear CE (smoothing, z-loss, softcap)", "linear distillation (jsd)",
                   "llama training step"]
  assert {c.memory_vs for c in _llm._cases(False) if c.name in ("softcap", "ALiBi", "segment ids")} == {"plain rule"}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the docstring states the CPU's figures")
@pytest.mark.parametrize("name", ["GQA attention", "sliding window"])
def test_the_attention_docstring_states_the_measured_memory(name):
  """The figures in ``attention``'s docstring are this case's compiled memory (deterministic: compiled, never
  run). They said 0.031× and 0.015× of autodiff's, which no measurement of the code reproduced."""
  case = next(c for c in _llm._cases(False) if c.name == name)
  manual, autodiff = (cost.compiled_cost(None, compiled=_llm._compiled(case, n)[0]).temp_bytes
                      for n in (MANUAL, AUTODIFF))
  stated = f"{manual / 2**20:.1f} MiB against {autodiff / 2**20:,.1f} MiB ({manual / autodiff:.2g}×)"
  assert stated in " ".join(ops.attention.__doc__.split()), f"re-measure, and state in the docstring: {stated}"
