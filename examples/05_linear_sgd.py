"""Note 002: ŷ = x·w on x = [1, 2, 3], y = [2, 4, 6], w = 1; per-sample SGD, lr 0.01, 100 epochs.

The note's PyTorch loop, in JAX on the manual rules: loss = (ŷ − y)², its gradient 2·x·(x·w − y)
(the note's "third step"), w ← w − 0.01·∂loss/∂w, and the prediction at x = 4 before (4) and after
(≈ 8). jaxbp's gradients are values returned by a pure function: nothing accumulates between steps,
so there is no `w.grad.data.zero_()` to forget; calling the gradient twice gives the same number.

Run: python examples/05_linear_sgd.py
"""

import sys

import jax
import jax.numpy as jnp

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

X, Y, LR, EPOCHS = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 0.01, 100
# A loss below 1e-20 is a residual x·w − y below 1e-10, where w's round-off (1e-16) shows in its digits:
# the table prints such a loss as the bound < 1e-20.
LOSS_FLOOR = 1e-20


def loss(w, x, y):
  return ops.mse(ops.multiply(x, w), y)  # (ŷ − y)², the note's loss (no ½)


def note_grad(w, x, y):
  """The note's closed form of ∂loss/∂w, its "third step"."""
  return 2 * x * (x * w - y)


@jax.jit
def step(w, x, y):
  l, g = jax.value_and_grad(loss)(w, x, y)
  return w - LR * g, l, g


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  check = NoteCheck("Note 002: per-sample SGD on ŷ = x·w")
  w, w_hand, rows = jnp.asarray(1.0), 1.0, []
  print("predict (before training)", 4, fmt(ops.multiply(4.0, w), 6))
  check.add("prediction at x = 4 before training", 4.0, ops.multiply(4.0, w), 1e-12)
  worst = 0.0
  for epoch in range(EPOCHS):
    for x, y in zip(X, Y):
      w_new, l, g = step(w, x, y)
      worst = max(worst, abs(float(g) - note_grad(float(w), x, y)))  # at the w g was taken at
      if epoch == 0:
        print(f"\tgrad: {x} {y} {fmt(g, 6)}")
      w, w_hand = w_new, w_hand - LR * note_grad(w_hand, x, y)
    if epoch < 3 or epoch % 20 == 19:
      rows.append([epoch, fmt(l, 8, LOSS_FLOOR), fmt(w, 8)])
  print(render(["progress: epoch", "last loss", "w"], rows))
  print("predict (after training)", 4, fmt(ops.multiply(4.0, w), 6), "\n")
  w0 = jnp.asarray(1.0)  # the starting point: its gradient 2·2·(2·1 − 4) = −8 is no round-off
  g1, g2 = jax.grad(loss)(w0, 2.0, 4.0), jax.grad(loss)(w0, 2.0, 4.0)
  print(f"no zero_(): the gradient at w = 1, x = 2, y = 4, asked twice: {fmt(g1, 8)}, {fmt(g2, 8)}\n")
  check.add("the gradient asked twice is the same (nothing accumulates)", g1, g2, 0.0)
  check.add("every step's ∂loss/∂w = 2·x·(x·w − y)", 0.0, worst, 1e-12)
  check.add("w after 100 epochs = the same loop in Python floats", w_hand, w, 1e-12)
  check.add("prediction at x = 4 after training ≈ 8", 8.0, ops.multiply(4.0, w), 1e-3)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
