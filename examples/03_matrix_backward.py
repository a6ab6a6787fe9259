"""Note 001: matrix backward for Y = X·W with N, D, M all different: dX = dY·Wᵀ, dW = Xᵀ·dY.

With an upstream gradient dY = ∂L/∂Y of Y's shape, the manual rule of jaxbp.ops.matmul gives dX and dW;
each entry is checked against the note's element-wise sum, ∂L/∂x_{n,d} = Σ_m ∂L/∂y_{n,m}·w_{d,m} and
∂L/∂w_{d,m} = Σ_n x_{n,d}·∂L/∂y_{n,m}, and the shapes are the only ones that match.

Run: python examples/03_matrix_backward.py
"""

import sys

import jax
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import render
import jaxbp.ops as ops

N, D, M = 2, 3, 4


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(1), 3)
  x, w = jax.random.normal(kx, (N, D)), jax.random.normal(kw, (D, M))
  dy = jax.random.normal(kg, (N, M))  # the upstream gradient ∂L/∂Y
  y, vjp = jax.vjp(ops.matmul, x, w)
  dx, dw = vjp(dy)                    # the manual rule: dY·Wᵀ and Xᵀ·dY
  xs, ws, gs = (np.asarray(a) for a in (x, w, dy))
  dx_sum = np.array([[sum(gs[n, m] * ws[d, m] for m in range(M)) for d in range(D)] for n in range(N)])
  dw_sum = np.array([[sum(xs[n, d] * gs[n, m] for n in range(N)) for m in range(M)] for d in range(D)])
  print(render(["array", "shape", "formula"], [
      ["X", f"[N×D] = {list(x.shape)}", "input"], ["W", f"[D×M] = {list(w.shape)}", "weights"],
      ["Y = X·W", f"[N×M] = {list(y.shape)}", "y_nm = Σ_d x_nd·w_dm"],
      ["dY", f"[N×M] = {list(dy.shape)}", "upstream ∂L/∂Y"],
      ["dX = dY·Wᵀ", f"[N×D] = {list(dx.shape)}", "[N×M]·[M×D]"],
      ["dW = Xᵀ·dY", f"[D×M] = {list(dw.shape)}", "[D×N]·[N×M]"]]), "\n")
  rows = [[f"dX[{n},{d}]", fmt(dx[n, d], 8), fmt(dx_sum[n, d], 8)] for n in range(N) for d in range(D)]
  rows += [[f"dW[{d},{m}]", fmt(dw[d, m], 8), fmt(dw_sum[d, m], 8)] for d in range(D) for m in range(M)]
  print(render(["entry", "manual rule", "element-wise sum"], rows), "\n")
  check = NoteCheck("Note 001: matrix backward, every entry vs its element-wise sum")
  check.add("dX = Σ_m dY·w (all entries)", dx_sum, dx, 1e-12)
  check.add("dW = Σ_n x·dY (all entries)", dw_sum, dw, 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
