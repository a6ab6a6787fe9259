"""A manual rule's compiled step against ``jax.grad`` of its reference, side by side in one run: the
measurement every rule section of the bench (conv, seq, attn) makes of its cases."""

from collections.abc import Callable
from typing import Any

import jax

from jaxbp.bench import _timing
from jaxbp.insight import cost

MANUAL, AUTODIFF = "manual", "jax.grad"


def block(exe: Callable, args: tuple) -> Callable[[int], None]:
  """``run(reps)``: ``exe(*args)`` ``reps`` times, then waits for the last result."""
  def run(reps: int) -> None:
    out = None
    for _ in range(reps):
      out = exe(*args)
    jax.block_until_ready(out)
  return run


def manual_vs_autodiff(compiled: dict, calls: dict, *, rounds: int, target_s: float,
                       extra: dict | None = None) -> tuple[dict, dict[str, Any]]:
  """Times ``compiled[MANUAL]`` and ``compiled[AUTODIFF]`` (each on ``calls[name]``), and the ``extra``
  blocks (e.g. PyTorch's) beside them, interleaved with the same repetitions; sizes their temporary memory.

  Returns (the timings by name, the row's common fields: reps, ms, temp_bytes, time_ratio, memory_ratio).
  """
  blocks = {name: block(exe, calls[name]) for name, exe in compiled.items()} | (extra or {})
  reps = _timing.calibrate(blocks[MANUAL], target_s)
  timings = _timing.interleave(blocks, rounds, dict.fromkeys(blocks, reps))
  temp = {name: cost.compiled_cost(None, compiled=exe).temp_bytes for name, exe in compiled.items()}
  return timings, {"reps": reps, "ms": {name: t.median * 1e3 for name, t in timings.items()}, "temp_bytes": temp,
                   "time_ratio": _timing.paired_ratio(timings[MANUAL], timings[AUTODIFF]),
                   "memory_ratio": temp[MANUAL] / temp[AUTODIFF] if temp[AUTODIFF] else None}  # None: both 0
