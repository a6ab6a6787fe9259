"""``jaxbp bench --long-context``: a tiny run end to end (its JSON's structure, and the manual step's compiled
memory below autodiff's, which memory_analysis makes deterministic), and the choices the GPU path makes,
taken on this CPU. No timing asserted."""

import contextlib
import io
import json

import jax
import numpy as np
import pytest

from jaxbp.bench import _long
from jaxbp.bench import _long_child


@pytest.fixture(scope="module")
def tiny_long(tmp_path_factory):
  """One ``jaxbp bench --long-context --long-context-max-T 256`` (T 128 and 256, four child processes)."""
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.mktemp("long") / "long.json"
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
    status = cli.main(["bench", "--long-context", "--long-context-max-T", "256", "--json", str(path)])
  assert status == 0
  return json.loads(path.read_text()), printed.getvalue()


def test_tiny_run_json_has_every_field_and_manual_memory_is_smaller(tiny_long):
  results, printed = tiny_long
  section = results["long_context"]
  assert set(section) >= {"ram_bytes", "max_T_manual", "max_T_autodiff", "rows", "growth_exponents"}
  assert section["ram_bytes"] == _long.ram_bytes() and section["dtype"] == "float32"
  assert [r["T"] for r in section["rows"]] == [128, 256]
  for row in section["rows"]:
    assert set(row) >= set(_long.ROW_KEYS)
    assert row["manual_ran"] and row["autodiff_ran"]  # a few MiB: both fit
    assert row["manual_step_s"] > 0 and row["manual_peak_rss_bytes"] > 2**20
    assert row["grads_agree"] and row["grad_rel_error"] <= _long.TOLERANCE["float32"]
  largest = section["rows"][-1]
  assert largest["manual_temp_bytes"] < largest["autodiff_temp_bytes"]
  assert section["max_T_manual"] == section["max_T_autodiff"] == 256
  assert printed.rstrip().endswith("**Largest T trained at: manual 256, jax.grad 256; ratio 1×.**")


def test_lengths_double_from_2048_or_from_half_the_largest():
  assert _long.lengths_up_to(65536) == list(_long.LENGTHS)
  assert _long.lengths_up_to(256) == [128, 256]
  assert _long.lengths_up_to(3000) == [1500, 3000]
  with pytest.raises(ValueError, match="max_length"):
    _long.lengths_up_to(8)


def test_cli_refuses_a_tiny_max_length_in_one_line(capsys):
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["bench", "--long-context", "--long-context-max-T", "8"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "--long-context-max-T" in err and len(err.strip().splitlines()) == 1


def test_gpu_path_chooses_bfloat16_device_memory_and_the_sdpa_columns():
  assert _long.step_dtype("cpu") == "float32" and _long.step_dtype("gpu") == "bfloat16"
  assert _long.memory_budget("gpu", 80 * 2**30)[0] == 40 * 2**30
  assert _long.memory_budget("cpu", 80 * 2**30)[0] == _long.ram_bytes() // 2  # the RAM, not a device's
  assert _long.memory_budget("gpu", None)[0] == _long.ram_bytes() // 2
  columns, notes = _long.sdpa_columns("cpu")
  assert columns == [] and "skipped on cpu" in notes[0]
  assert _long.sdpa_columns("gpu", probe=lambda impl: True) == (["cudnn", "xla"], [])
  columns, notes = _long.sdpa_columns("gpu", probe=lambda impl: impl == "xla" or "no cuDNN")
  assert columns == ["xla"] and "'cudnn'" in notes[0] and "no cuDNN" in notes[0]


def _grads(variant):
  step, args = _long_child.step_and_args(variant, 64, "float32")
  return jax.tree_util.tree_leaves(step(*args)[1])


def test_sdpa_column_step_runs_here_and_matches_the_reference():
  """The GPU column's code on this CPU, through jax.nn.dot_product_attention's "xla" implementation."""
  for got, want in zip(_grads("sdpa xla"), _grads(_long_child.AUTODIFF)):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.max(np.abs(want))))
  with pytest.raises(ValueError, match="causal attention only"):
    _long_child.SdpaOps("xla").attention(*(np.zeros((1, 4, 2, 2), np.float32),) * 3, window=2)
  with pytest.raises(ValueError, match="variant"):
    _long_child.namespace("pallas")


def test_a_step_that_outlives_its_timeout_is_reported_not_run(tmp_path):
  got = _long.run_step(_long_child.MANUAL, 64, "float32", 2**30, str(tmp_path / "g.npz"), timeout_s=0.01)
  assert got["ran"] is False and got["error"] == "timed out after 0.01 s" and not (tmp_path / "g.npz").exists()


def test_growth_exponent_is_the_log_log_slope():
  assert _long.growth_exponent([1024, 2048, 4096], [3.0, 12.0, 48.0]) == pytest.approx(2.0)
  assert _long.growth_exponent([1024], [3.0]) is None


def test_a_variant_that_failed_before_it_compiled_renders_as_a_dash(tiny_long):
  """A timeout or crash before the child wrote its JSON leaves temp_bytes None: the table says –, it does not
  end an hour's run in a TypeError before the JSON is written."""
  section = json.loads(json.dumps(tiny_long[0]["long_context"]))
  section["rows"][-1]["autodiff_temp_bytes"] = None
  line = next(l for l in _long.render(section).splitlines() if l.startswith("| 256 "))
  assert line.split("|")[3:5] == [" – ", " – "]  # jax.grad temp and the memory ratio
