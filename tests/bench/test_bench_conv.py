"""The bench's conv2d and pooling rows: every op measured both ways, and the compiled memory goals."""

from jaxbp.bench import _conv


def test_tiny_conv_rows_measure_every_op_both_ways_and_keep_memory_within_autodiff():
  rows = _conv.measure(tiny=True, rounds=2, target_s=0.001, with_torch=False)
  assert [(r["op"], r["size"]) for r in rows] == [("conv2d", "small"), ("max_pool2d", "small"),
                                                  ("max_pool2d", "global"), ("avg_pool2d", "small")]
  for r in rows:
    assert set(r["ms"]) == {_conv.MANUAL, _conv.AUTODIFF} and min(r["ms"].values()) > 0
    assert r["temp_bytes"][_conv.MANUAL] <= r["temp_bytes"][_conv.AUTODIFF], r["op"]  # deterministic
  text = _conv.render(rows)
  assert text.count("\n| ") == 1 + len(rows) and "memory manual/jax.grad" in text
