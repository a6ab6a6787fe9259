"""Note 001: the multiclass SVM loss with L2 regularisation, L = 1/N Σ_i L_i + λ/2·‖W‖².

L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + 1) on scores s = x_i·W. Its gradient, written out by hand: every
class j ≠ y_i with a positive margin adds x_i to column j of dW and subtracts it from column y_i; the
regulariser adds λW (note 001: L2 as weight decay). Part A checks the hinge loss on the score table of the
lecture the note follows (CS231n: cat/car/frog scores, losses 2.9, 0, 12.9; that table is in the note's
figure, not its text). Part B checks the gradient of the data term plus λW on a small random batch.

Run: python examples/04_svm_hinge_l2.py
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

SCORES = [[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]]  # rows: samples, columns: classes
LABELS = [0, 1, 2]                                               # cat, car, frog
LECTURE = [2.9, 0.0, 12.9]
LAM = 0.1


def loss(w, x, labels, o=ops):
  return o.add(o.multiclass_hinge(o.matmul(x, w), labels), o.l2_penalty(w, LAM))


def hand_gradient(w, x, labels):
  """The gradient by the note's reasoning: margins > 0 route +x_i to class j and −x_i to y_i."""
  w, x = np.asarray(w), np.asarray(x)
  s = x @ w
  dw = np.zeros_like(w)
  for i, y in enumerate(labels):
    for j in range(w.shape[1]):
      if j != y and s[i, j] - s[i, y] + 1 > 0:
        dw[:, j] += x[i]
        dw[:, y] -= x[i]
  return dw / len(labels) + LAM * w


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  check = NoteCheck("Note 001: SVM loss and its gradient")
  per_sample = ops.multiclass_hinge(jnp.array(SCORES), jnp.array(LABELS), reduction="none")
  print("Part A: the lecture's scores (rows cat, car, frog images; columns cat, car, frog scores)")
  print(render(["sample", "scores", "label", "L_i", "lecture"],
               [[i, fmt(jnp.array(s), 1), l, fmt(per_sample[i], 4), LECTURE[i]]
                for i, (s, l) in enumerate(zip(SCORES, LABELS))]), "\n")
  check.add("L_i per sample", LECTURE, per_sample, 0.005)
  check.add("mean L = 5.27", 5.27, jnp.mean(per_sample), 0.005)
  kx, kw = jax.random.split(jax.random.PRNGKey(4))
  x, w = jax.random.normal(kx, (5, 4)), 0.5 * jax.random.normal(kw, (4, 3))
  labels = jnp.array([0, 2, 1, 1, 0])
  rules = jax.grad(loss)(w, x, labels)
  autodiff = jax.grad(loss)(w, x, labels, o=ops.reference)
  hand = hand_gradient(w, x, labels)
  print(f"Part B: N=5, D=4, C=3, λ={LAM}; L = {fmt(loss(w, x, labels), 6)}")
  print(render(["dW[d, c]", "by hand (margins + λW)", "manual rules", "jax.grad (reference)"],
               [[f"[{d},{c}]", fmt(hand[d, c], 6), fmt(rules[d, c], 6), fmt(autodiff[d, c], 6)]
                for d in range(4) for c in range(3)]), "\n")
  check.add("dW, manual rules = by hand", hand, rules, 1e-12)
  check.add("dW, jax.grad = by hand", hand, autodiff, 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
