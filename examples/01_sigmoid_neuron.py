"""Note 000: one sigmoid neuron, O = σ(x·wᵀ), E = ½(O − t)², and its gradient three ways.

The note's closed form ∂E/∂w_j = (O − t)·O(1 − O)·x_j, the manual rules of jaxbp.ops and jax.grad of the
plain-jnp references agree on random x, w of shape 1×10 and target t = 1 (the note's PyTorch example,
`torch.sigmoid(x @ w.t())`, in JAX). The note's PyTorch cell uses F.mse_loss, which is (O − t)² without
the ½: its gradient is exactly twice the closed form, printed in the last column.

Run: python examples/01_sigmoid_neuron.py
"""

import sys

import jax
import jax.numpy as jnp

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops


def loss(w, x, t, ops=jaxbp.ops, kind="squared_error"):
  o = ops.sigmoid(ops.matmul(x, w.T))  # [1, 1]
  return getattr(ops, kind)(o, t)      # ½(O − t)² (the note's E) or (O − t)² (F.mse_loss)


def main():
  with jax.enable_x64(True):  # exact values: every number below in float64
    return _run()


def _run():
  kx, kw = jax.random.split(jax.random.PRNGKey(0))
  x, w = jax.random.normal(kx, (1, 10)), jax.random.normal(kw, (1, 10))
  t = jnp.ones((1, 1))
  o = jaxbp.ops.sigmoid(x @ w.T)
  closed = (o - t) * o * (1 - o) * x  # the note's formula, [1, 10]
  rules = jax.grad(loss)(w, x, t)
  autodiff = jax.grad(loss)(w, x, t, ops=jaxbp.ops.reference)
  mse = jax.grad(loss)(w, x, t, kind="mse")
  print(f"O = σ(x·wᵀ) = {fmt(o[0, 0], 6)},  t = 1,  E = ½(O − t)² = {fmt(loss(w, x, t), 6)}\n")
  rows = [[j, fmt(x[0, j], 4), fmt(closed[0, j], 8), fmt(rules[0, j], 8), fmt(autodiff[0, j], 8),
           fmt(mse[0, j], 8)] for j in range(10)]
  print(render(["j", "x_j", "(O−t)·O(1−O)·x_j", "manual rules", "jax.grad (reference)",
                "F.mse_loss-style (O−t)²"], rows), "\n")
  check = NoteCheck("Note 000: ∂E/∂w, closed form vs computed", decimals=8)
  check.add("manual rules = closed form", closed, rules, 1e-12)
  check.add("jax.grad = closed form", closed, autodiff, 1e-12)
  check.add("mse gradient = 2 × closed form", 2 * closed, mse, 1e-12, "F.mse_loss has no ½")
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
