"""Notes 001 and 004: vanishing and exploding gradients in a 20-layer MLP, and what fixes them.

Per-layer gradient norms ‖∂L/∂W_ℓ‖ at initialisation, on one batch, for four 20-hidden-layer networks:
sigmoid (Xavier init), ReLU with He init, sigmoid with residual connections, sigmoid with batch norm.
With sigmoid alone the norm shrinks by orders of magnitude from the output back to the input (σ' ≤ 1/4
at every layer: note 004's vanishing gradient: about 1e-12 at the input); He-initialised ReLU, residual
connections and batch norm keep it within two orders of magnitude (note 001's remedies). Prints the
table and writes the plot to --out (by default grad_flow.png in a new temporary folder, never the
current one); --depth sets the number of hidden layers.

Run: python examples/10_gradient_flow.py [--out grad_flow.png] [--depth 20]
"""

import argparse
import math
import os
import sys
import tempfile

import jax

from jaxbp.insight.gradflow import plot_grad_norms
from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import render
from jaxbp.models import MLPConfig
from jaxbp.models import init_mlp
from jaxbp.models import mlp_apply
import jaxbp.ops as ops
from jaxbp.train import layer_grad_norms

DEPTH, WIDTH, BATCH = 20, 64, 128


def configs(depth):
  """The four networks, ``depth`` hidden layers of WIDTH units each."""
  sizes = (WIDTH,) * (depth + 1) + (10,)
  return {
      "sigmoid": MLPConfig(sizes, activation="sigmoid", init="xavier"),
      "ReLU + He": MLPConfig(sizes, activation="relu", init="he"),
      "sigmoid + residual": MLPConfig(sizes, activation="sigmoid", init="xavier", residual=True),
      "sigmoid + batch norm": MLPConfig(sizes, activation="sigmoid", init="xavier", batch_norm=True),
  }


def grad_norms(config, x, labels):
  params, state = init_mlp(jax.random.PRNGKey(0), config)

  def loss(p):
    logits, _ = mlp_apply(p, x, config, state=state, train=True)
    return ops.softmax_cross_entropy(logits, labels)

  return list(layer_grad_norms(jax.jit(jax.grad(loss))(params)).values())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
  parser.add_argument("--out", help="where to write the plot (default: grad_flow.png in a new temporary folder)")
  parser.add_argument("--depth", type=int, default=DEPTH, help=f"hidden layers (default {DEPTH})")
  opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
  out = opts.out or os.path.join(tempfile.mkdtemp(prefix="jaxbp-"), "grad_flow.png")
  depth = opts.depth
  x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, WIDTH))
  labels = jax.random.randint(jax.random.PRNGKey(2), (BATCH,), 0, 10)
  curves = {name: grad_norms(config, x, labels) for name, config in configs(depth).items()}
  layers = len(next(iter(curves.values())))
  ratio = {n: c[0] / c[-2] for n, c in curves.items()}  # first / last hidden layer
  rows = [[i + 1] + [f"{curves[n][i]:.2e}" for n in curves] for i in range(layers)]
  rows.append(["first/last"] + [f"{r:.1e}" for r in ratio.values()])
  print(render(["layer"] + list(curves), rows), "\n")
  print(f"wrote {plot_grad_norms(curves, out, f'{depth}-hidden-layer MLP: ‖∂L/∂W‖ per layer')}\n")
  check = NoteCheck(f"Notes 001/004: gradient flow through {depth} layers (first/last hidden layer)", 4)
  check.add("sigmoid: vanishes (ratio ≤ 1e-3)", 0.0, ratio["sigmoid"], 1e-3)
  for name in list(curves)[1:]:
    check.add(f"{name}: no vanishing (|log10 ratio| ≤ 2)", 0.0, math.log10(ratio[name]), 2.0)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
