"""The sequence section of the benchmark runs at toy sizes and reports both variants. No timing asserted."""

from jaxbp.bench import _seq


def test_tiny_sequence_section_reports_every_rule():
  rows = _seq.measure(tiny=True, rounds=2, target_s=0.001, with_torch=False)
  assert [r["rule"] for r in rows] == ["embedding", "rnn", "lstm"]
  for r in rows:
    assert set(r["ms"]) == {"manual", "jax.grad"} and all(v > 0 for v in r["ms"].values())
    assert r["time_ratio"] > 0
  lstm = rows[-1]
  assert lstm["temp_bytes"]["manual"] < lstm["temp_bytes"]["jax.grad"]  # the recompute-gates residual
  text = _seq.render(rows)
  assert text.count("\n| ") == 4 and "| lstm | tiny |" in text
