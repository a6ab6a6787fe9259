"""Embedding: a lookup is a matmul with a one-hot matrix, so its backward is a scatter-add (note 001).

Y = E[ids] is Y = onehot(ids)·E, and note 001's dW = Xᵀ·dY with X = onehot(ids) gives
dE = onehot(ids)ᵀ·dY: each upstream row dY_k is added into the row of the table it came from. Here id 2
is used three times, so its row of dE is the sum of three upstream rows (a fan-out sums its gradients),
id 0 once, and rows 1 and 3 are never looked up: their gradient is 0. The manual rule of
jaxbp.ops.embedding never builds the one-hot matrix; the one-hot product is computed beside it to check.

Run: python examples/12_embedding.py
"""

import sys

import jax
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

IDS = np.array([2, 0, 2, 2])
V, D = 4, 3


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  table = np.arange(V * D, dtype=np.float64).reshape(V, D) / 10       # E, row v = 0.v…
  dy = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])       # the upstream gradient ∂L/∂Y
  y, vjp = jax.vjp(lambda e: ops.embedding(IDS, e), table)
  (de,) = vjp(dy)                                                    # the manual rule: a scatter-add
  onehot = np.eye(V)[IDS]                                            # [4 positions × V]
  print(render(["position k", "id", "Y_k = E[id]", "upstream dY_k"],
               [[k, int(i), fmt(y[k], 2), fmt(dy[k], 0)] for k, i in enumerate(IDS)]), "\n")
  rows = []
  for v in range(V):
    uses = [k for k, i in enumerate(IDS) if i == v]
    summed = " + ".join(f"dY_{k}" for k in uses) or "nothing"
    rows.append([v, len(uses), summed, fmt(de[v], 0)])
  print(render(["row v of dE", "uses", "sum of", "manual rule"], rows), "\n")
  check = NoteCheck("Embedding: dE = onehot(ids)ᵀ·dY, a repeated id accumulates")
  check.add("forward Y = onehot(ids)·E", onehot @ table, y, 1e-12)
  check.add("dE = onehot(ids)ᵀ·dY (every entry)", onehot.T @ dy, de, 1e-12)
  check.add("dE[2] = dY_0 + dY_2 + dY_3 (id 2, three uses)", dy[0] + dy[2] + dy[3], de[2], 1e-12)
  check.add("max |dE[1]|, |dE[3]| = 0 (never looked up)", 0.0, np.abs(np.asarray(de)[[1, 3]]).max(), 0)
  check.add("dE = jax.grad of E[ids]", jax.vjp(lambda e: e[IDS], table)[1](dy)[0], de, 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
