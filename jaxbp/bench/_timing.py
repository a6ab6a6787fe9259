"""Fair timing under noise: variants interleaved in rounds, medians, and paired ratios per round.

A shared machine drifts: another process starts, the CPU clocks down. Timing variant A for a minute and
then variant B for a minute puts the drift into the comparison. Here every round runs each variant once,
so variants see the same conditions, and each round yields a ratio A/B measured seconds apart. The
median of those paired ratios is the comparison reported.

A variant can also disturb the one timed after it (PyTorch's worker threads spin on after its last op;
caches hold its data), so the order changes from round to round, and one untimed call of a variant
precedes its timed block. Up to four variants cycle through every permutation, each variant following
each other equally often; with more (5! = 120 orders) each round draws a seeded random permutation,
balanced in expectation rather than exactly.
"""

from collections.abc import Callable
import itertools
import math
import random
import statistics
import time
from typing import NamedTuple


class Timing(NamedTuple):
  """Seconds per call of one variant.

  Attributes:
    median: median over rounds of the mean time per call in that round's block.
    best: the fastest round.
    rounds: every round's time per call, in round order.
  """
  median: float
  best: float
  rounds: tuple

  def _repr_html_(self) -> str:
    """What Jupyter shows: median, best and every round in ms (``jaxbp.insight.display``)."""
    from jaxbp.insight import display
    return display.timing_html(self)


def calibrate(block: Callable[[int], None], target_s: float, max_reps: int = 10_000) -> int:
  """Calls per block so that one block lasts about ``target_s`` (one warm-up call, one timed call).

  ``block(reps)`` must run ``reps`` calls and wait for their results.
  """
  block(1)
  start = time.perf_counter()
  block(1)
  once = max(time.perf_counter() - start, 1e-7)
  return int(min(max_reps, max(1, math.ceil(target_s / once))))


def interleave(blocks: dict, rounds: int, reps: dict) -> dict:
  """Times every variant ``rounds`` times, one block each per round, in a different order each round.

  Args:
    blocks: name -> ``block(reps)``, which runs ``reps`` calls and blocks until they are done.
    rounds: how many rounds; with up to 4 variants, a multiple of the number of orders (6 for 3
      variants) balances them; with more, each round's order is a random permutation (seed 0).
    reps: name -> calls per block (from ``calibrate``).

  Every variant is called once before the first round (PyTorch's first calls set up its autograd
  engine: one settling call does not absorb them), so callers need not calibrate every variant.

  Returns:
    name -> ``Timing``.
  """
  names = list(blocks)
  if len(names) <= 4:
    orders = list(itertools.permutations(names))
    order_of = lambda r: orders[r % len(orders)]
  else:
    rng = random.Random(0)
    order_of = lambda r: rng.sample(names, len(names))
  for name in names:
    blocks[name](1)  # warm-up
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(rounds):
    for name in order_of(r):
      blocks[name](1)  # settle: absorbs what the previous variant left behind
      start = time.perf_counter()
      blocks[name](reps[name])
      times[name].append((time.perf_counter() - start) / reps[name])
  return {name: Timing(statistics.median(t), min(t), tuple(t)) for name, t in times.items()}


def paired_ratio(a: Timing, b: Timing) -> float:
  """Median over rounds of a's time / b's time in the same round (< 1 means a is faster)."""
  return statistics.median(x / y for x, y in zip(a.rounds, b.rounds))

