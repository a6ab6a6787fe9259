"""At a size above ``LARGE`` elements, check_vjp takes its compiled, on-device path: the checks that
would build a Jacobian or replay on the host are skipped with their reason, the bounded ones run."""

import numpy as np

from jaxbp import ops
from jaxbp.check import check_vjp
from jaxbp.check._compare import LARGE


def test_large_input_runs_bounded_checks_and_reports_the_skipped_ones():
  x = np.random.default_rng(0).uniform(-2, 2, size=(LARGE // 1024 + 1, 1024)).astype(np.float32)
  report = check_vjp(ops.sigmoid, ops.reference.sigmoid, x, directions=1)
  assert {e.check for e in report.entries} == {"forward", "vjp", "finite_differences", "transpose", "jit",
                                               "vmap", "linearity", "cotangents", "determinism"}
  assert report.notes[0].startswith("residuals:")
  skipped = {c: why for c, _, why in report.skipped}
  assert set(skipped) == {"jacobian", "self_test"}
  assert "entries > jacobian_max_size" in skipped["jacobian"] and "elements" in skipped["self_test"]
