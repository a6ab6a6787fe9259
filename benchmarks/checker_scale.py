"""check_vjp at the sizes of issue 13 item 7: time and peak memory of each case, with what it skipped.

  python benchmarks/checker_scale.py [--case ce|linear_ce|attention] [--rows 4096] [--directions 1]

Each case runs in its own process (peak RSS is per process): a [rows, 32768] float32
softmax_cross_entropy, a linear_softmax_cross_entropy with h [rows, 256] and W [256, 32768], and
attention over 4,096 positions (q, k, v [1, 4096, 4, 64]). Default checks, ``directions=1`` unless
``--directions`` says otherwise (check_vjp's default is 3: each direction is two float64 forward
passes over every input); above
``LARGE`` elements the float64 finite differences run compiled on the device, the Jacobian and the
self-test are skipped with their reason (printed). Report the load (``uptime``) with the numbers.
"""

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

CASES = ("ce", "linear_ce", "attention")


def _inputs(case, rows, rng):
  from jaxbp import ops  # pylint: disable=import-outside-toplevel
  if case == "ce":
    return ops.softmax_cross_entropy, (rng.standard_normal((rows, 32768), np.float32),
                                       rng.integers(0, 32768, rows).astype(np.int32))
  if case == "linear_ce":
    return ops.linear_softmax_cross_entropy, (rng.standard_normal((rows, 256), np.float32) / 16,
                                              rng.standard_normal((256, 32768), np.float32) / 16,
                                              rng.integers(0, 32768, rows).astype(np.int32))
  return ops.attention, tuple(rng.standard_normal((1, 4096, 4, 64), np.float32) for _ in range(3))


def run_one(case, rows, directions):
  from jaxbp.check import check_vjp  # pylint: disable=import-outside-toplevel
  from jaxbp.ops import REGISTRY  # pylint: disable=import-outside-toplevel
  fn, args = _inputs(case, rows, np.random.default_rng(0))
  start = time.perf_counter()
  try:
    report = check_vjp(fn, REGISTRY[fn.__name__].reference, *args, directions=directions)
  except AssertionError as exc:  # the report of a failed check: print its first line, not a traceback
    report = exc.report  # type: ignore[attr-defined]
    print(str(exc).splitlines()[0])
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"{case} (directions={directions}): {'passed' if report.passed else 'FAILED'} {len(report.entries)}"
        f" checks in {seconds:.1f} s,"
        f" peak RSS {peak:.1f} GB")
  for check, label, why in report.skipped:
    print(f"  skipped {check} for {label}: {why}")


def _positive(text):
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f"must be an integer of at least 1, got {text!r}")
  return int(text)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--case", choices=CASES)
  parser.add_argument("--rows", type=_positive, default=4096)
  parser.add_argument("--directions", type=_positive, default=1)
  opts = parser.parse_args(argv)
  if opts.case:
    run_one(opts.case, opts.rows, opts.directions)
    return 0
  print(subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
  for case in CASES:
    subprocess.run([sys.executable, __file__, "--case", case, "--rows", str(opts.rows),
                    "--directions", str(opts.directions)], check=False)
  return 0


if __name__ == "__main__":
  sys.exit(main())
