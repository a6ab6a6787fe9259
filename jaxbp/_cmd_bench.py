"""Benchmark the manual rules against jax.grad and PyTorch eager: step time, GFLOP/s and % of the
machine's GEMM ceiling, compiled temporary memory, backward/forward FLOPs, digits time-to-97%.

Variants run interleaved in rounds in one process; ratios are medians of per-round paired ratios.
Examples:
  jaxbp bench                    # the full tables (a few minutes on a 2-core CPU)
  jaxbp bench --scale --json out.json
  jaxbp bench --tiny             # toy sizes, seconds: proves it runs
"""

from jaxbp.bench import HELP
from jaxbp.bench import configure
from jaxbp.bench import run

__all__ = ["HELP", "configure", "run"]
