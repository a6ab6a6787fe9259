"""Note 002: two stacked linear layers are one: W2(W1·x + b1) + b2 = W·x + b, W = W2·W1, b = W2·b1 + b2.

In jaxbp's row convention (x is a row, y = x·W + b) the same identity reads W = W1·W2, b = b1·W2 + b2.
It is checked numerically, and then shown to fail once a ReLU sits between the layers: the best affine
map fitted by least squares to the network's outputs on 200 points reproduces the linear stack exactly
and the ReLU stack only with a large residual — the nonlinearity is what makes depth worth having.

Run: python examples/07_stacked_linear.py
"""

import sys

import jax
import jax.numpy as jnp

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

D, H, M, N = 3, 5, 2, 200
ROUND_OFF = 1e-12  # float64 differences below this are round-off


def affine_residual(x, y):
  """Relative residual of the least-squares fit y ≈ x·W + b (0 when y is affine in x)."""
  xb = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
  coef, *_ = jnp.linalg.lstsq(xb, y)
  return jnp.linalg.norm(xb @ coef - y) / jnp.linalg.norm(y - y.mean(0))


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  k = jax.random.split(jax.random.PRNGKey(7), 5)
  w1, b1 = jax.random.normal(k[0], (D, H)), jax.random.normal(k[1], (H,))
  w2, b2 = jax.random.normal(k[2], (H, M)), jax.random.normal(k[3], (M,))
  x = jax.random.normal(k[4], (N, D))
  stacked = ops.linear(ops.linear(x, w1, b1), w2, b2)
  w, b = ops.matmul(w1, w2), ops.add(ops.matmul(b1, w2), b2)  # the collapsed layer
  one = ops.linear(x, w, b)
  relu_net = ops.linear(ops.relu(ops.linear(x, w1, b1)), w2, b2)
  print(render(["", "shape"], [["W1", list(w1.shape)], ["W2", list(w2.shape)],
                               ["W = W1·W2", list(w.shape)], ["b = b1·W2 + b2", list(b.shape)]]), "\n")
  # Round-off (about 1e-15 here) prints as the bound < 1e-12: its digits differ from one CPU to the next.
  rows = [["linear, linear", fmt(jnp.max(jnp.abs(stacked - one)), 4, ROUND_OFF),
           fmt(affine_residual(x, stacked), 4, ROUND_OFF)],
          ["linear, ReLU, linear", fmt(jnp.max(jnp.abs(relu_net - one)), 4, ROUND_OFF),
           fmt(affine_residual(x, relu_net), 4, ROUND_OFF)]]
  print(render(["network", "max |net(x) − (x·W + b)|", "best affine fit: relative residual"], rows))
  print()
  check = NoteCheck("Note 002: stacked linear layers collapse to one")
  check.add("linear stack = x·W + b", stacked, one, ROUND_OFF)
  check.add("linear stack is affine (residual)", 0.0, affine_residual(x, stacked), ROUND_OFF)
  check.add("with a ReLU: no affine map fits", 0.0, affine_residual(x, relu_net), 0.05,
            "expected to differ: the ReLU breaks the collapse", expect_differ=True)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
