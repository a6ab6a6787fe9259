"""The benchmark runs end to end at toy sizes and its numbers are self-consistent. No timing asserted."""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.bench import _models
from jaxbp.bench import _timing
from jaxbp.bench import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One ``jaxbp bench --tiny`` run, through the ``jaxbp`` command, serving every test below that reads a
  report (a second run compiled every step again: 12 s): its JSON, its Markdown file and what it printed."""
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  path = tmp_path_factory.mktemp("bench") / "tiny.json"
  md = path.with_suffix(".md")
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    status = cli.main(["bench", "--tiny", "--scale", "--models", "small,deep", "--no-torch", "--no-digits", "--no-llm",
                       "--json", str(path), "--markdown", str(md)])
  assert status == 0
  return json.loads(path.read_text()), md.read_text(), printed.getvalue()


@pytest.fixture
def tiny_results(tiny_run):
  return tiny_run[:2]


def test_tiny_run_reports_every_model_both_ways(tiny_results):
  results, _ = tiny_results
  assert [r["sizes"][0] for r in results["steps"]] == [16, 16]
  for r in results["steps"]:
    assert set(r["variants"]) == {"manual", "jax.grad"}
    assert set(r["ratios"]) == {"manual / jax.grad"}
    for v in r["variants"].values():
      assert v["ms"] > 0 and len(v["rounds_ms"]) == 2
      assert v["temp_bytes"] is not None and v["temp_bytes"] > 0  # the hidden activations, at least
  assert results["ceilings"][0]["dtype"] == "float32" and results["ceilings"][0]["ceiling"] > 0
  assert len(results["scale"]["rows"]) == 2


def test_flop_split_matches_the_matmul_count(tiny_results):
  results, _ = tiny_results
  small = results["steps"][0]
  sizes, n = small["sizes"], small["batch"]
  matmul_flops = sum(2 * n * a * b for a, b in zip(sizes[:-1], sizes[1:]))
  for rules in ("manual", "jax.grad"):
    f = small["flops"][rules]
    # XLA counts the matmuls exactly, plus a few element-wise FLOPs (bias, relu, softmax).
    assert matmul_flops <= f["forward_flops"] < 1.2 * matmul_flops
    assert f["ratio_with_input_grad"] == pytest.approx(2.0, abs=0.1)
    assert f["ratio"] < f["ratio_with_input_grad"]


def test_markdown_has_every_section(tiny_results):
  _, md = tiny_results
  for heading in ("GEMM ceiling", "Training step", "Paired ratios", "Backward / forward", "Scale"):
    assert heading in md
  assert "| small: batch 8, 16-32-32-4 | manual |" in md


def test_manual_and_plain_steps_agree():
  spec = _models.ModelSpec("t", (8, 16, 4), 6)
  params, x, labels = _models.make_batch(spec, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
  manual = _models.make_step(ops)(params, x, labels)
  plain = _models.make_step(ops.reference)(params, x, labels)
  for a, b in zip(jax.tree_util.tree_leaves(manual), jax.tree_util.tree_leaves(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interleave_rotates_and_pairs():
  calls = []
  blocks = {name: (lambda reps, name=name: calls.append((name, reps))) for name in "abc"}
  timings = _timing.interleave(blocks, rounds=6, reps={"a": 2, "b": 2, "c": 2})
  assert calls[:3] == [("a", 1), ("b", 1), ("c", 1)]  # every variant warmed up before round 1
  calls = calls[3:]
  timed = [name for name, reps in calls if reps == 2]
  assert [name for name, reps in calls if reps == 1] == timed  # one settling call before each block
  rounds = ["".join(timed[i:i + 3]) for i in range(0, 18, 3)]
  assert sorted(rounds) == ["abc", "acb", "bac", "bca", "cab", "cba"]
  assert all(len(t.rounds) == 6 for t in timings.values())


def test_paired_ratio_is_the_median_of_per_round_ratios():
  a = _timing.Timing(3.0, 1.0, (1.0, 10.0, 3.0))
  b = _timing.Timing(2.0, 1.0, (2.0, 5.0, 1.0))
  # Per round 0.5, 2.0, 3.0: median 2.0, where the ratio of the medians would be 3 / 2 = 1.5.
  assert _timing.paired_ratio(a, b) == 2.0


def test_interleave_with_more_than_four_variants_varies_more_than_rotations():
  calls = []
  blocks = {name: (lambda reps, name=name: calls.append((name, reps))) for name in "abcde"}
  _timing.interleave(blocks, rounds=12, reps=dict.fromkeys("abcde", 2))
  timed = "".join(name for name, reps in calls[5:] if reps == 2)
  rounds = [timed[i:i + 5] for i in range(0, 60, 5)]
  assert all(sorted(r) == list("abcde") for r in rounds)
  assert len(set(rounds)) > 5  # the 5 rotations of one order would leave "b" always after "a"


def test_torch_variant_runs_when_installed():
  pytest.importorskip("torch")
  _models.torch_block(_models.ModelSpec("t", (8, 16, 4), 6))(2)


def test_digits_training_path_runs():
  pytest.importorskip("sklearn")
  from jaxbp.bench import _digits
  data = _digits.load()
  result = _digits.train_jax(data, target=0.97, max_epochs=1)
  assert result["epochs"] == 1 and 0.0 <= result["accuracy"] <= 1.0


def test_torch_digits_model_has_the_jax_models_weights():
  torch = pytest.importorskip("torch")
  pytest.importorskip("sklearn")
  from jaxbp.bench import _digits
  x_test = _digits.load()[1][:5]
  params, _, _ = _models.make_batch(_models.ModelSpec("digits", _digits.SIZES, _digits.BATCH))
  with torch.no_grad():
    torch_logits = _digits._torch_mlp(params)(torch.tensor(x_test)).numpy()
  np.testing.assert_allclose(torch_logits, _models.mlp_logits(ops, params, x_test), rtol=1e-5, atol=1e-6)


def test_unknown_model_is_refused_before_anything_runs(capsys):
  with pytest.raises(SystemExit):
    main(["--tiny", "--models", "small,smal"])
  assert "unknown model smal" in capsys.readouterr().err


def test_jaxbp_bench_command(tiny_run):
  _, md, printed = tiny_run  # `jaxbp bench` prints the report it writes to --markdown
  assert "| small: batch 8, 16-32-32-4 | jax.grad |" in printed and printed.strip() == md.strip()
