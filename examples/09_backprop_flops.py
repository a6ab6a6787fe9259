"""Note 003: forward ≈ 2·P·D FLOPs, backward ≈ 4·P·D, measured by XLA for MLPs of several sizes.

P is the number of parameters and D the number of samples in the batch. The counts come from XLA's
compiled cost analysis (jaxbp.cost.backprop_cost): the forward is the loss compiled alone, the backward
is what value_and_grad adds on the manual rules. XLA drops the first layer's input gradient dX when
nothing uses it, so the table shows both: with it (the notes' count, ratio ≈ 2) and without it.

Run: python examples/09_backprop_flops.py
"""

import sys

import jax
import jax.numpy as jnp

from jaxbp import cost
from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
from jaxbp.models import MLPConfig
from jaxbp.models import init_mlp
from jaxbp.models import mlp_apply
import jaxbp.ops as ops

SIZES = [(32, 64, 10), (256, 512, 10), (512, 1024, 1024, 10)]
BATCH = 128


def main():
  check = NoteCheck("Note 003: backward/forward FLOPs ≈ 2", decimals=3)
  rows = []
  for sizes in SIZES:
    config = MLPConfig(sizes=sizes, activation="relu")
    # XLA counts FLOPs from shapes alone: no array is ever filled.
    params = jax.eval_shape(lambda c=config: init_mlp(jax.random.PRNGKey(0), c)[0])
    x = jax.ShapeDtypeStruct((BATCH, sizes[0]), jnp.float32)
    labels = jax.ShapeDtypeStruct((BATCH,), jnp.int32)

    def loss(p, x, labels, config=config):
      return ops.softmax_cross_entropy(mlp_apply(p, x, config)[0], labels)

    full = cost.backprop_cost(loss, params, x, labels, wrt_input=True)
    lean = cost.backprop_cost(loss, params, x, labels)
    pd = full.params * full.samples
    rows.append(["-".join(map(str, sizes)), f"{full.params:,}", BATCH, f"{2 * pd:,}",
                 f"{full.forward_flops:,.0f}", f"{full.backward_flops:,.0f}", fmt(full.ratio, 3),
                 fmt(lean.ratio, 3)])
    check.add(f"{rows[-1][0]}: forward / (2·P·D)", 1.0, full.forward_flops / (2 * pd), 0.1)
    check.add(f"{rows[-1][0]}: backward / forward (with dX)", 2.0, full.ratio, 0.1)
  print(render(["MLP", "P", "D", "2·P·D", "forward FLOPs", "backward FLOPs",
                "backward/forward", "without dX"], rows), "\n")
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
