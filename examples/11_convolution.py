"""Convolution: dX is a transposed convolution with the flipped kernel, dW a correlation of X with dY.

A 4×4 input x = 1..16 (row by row) and a 2×2 kernel w = [[1, 2], [3, 4]], no padding, stride 1, give
a 3×3 output; the upstream gradient dY is all ones. By hand (CS231n's loops, note 001's gates):
each output y[i, j] = Σ w[a, b]·x[i + a, j + b] is a multiply gate per tap, so
  dX[p, q] = Σ over the windows that hold (p, q) of w at its place there: a corner sits in one window
  (dX[0, 0] = w[0, 0] = 1, dX[0, 3] = w[0, 1] = 2, dX[3, 0] = w[1, 0] = 3, dX[3, 3] = w[1, 1] = 4),
  an edge pixel in two, an inner pixel in all four taps' windows (1 + 2 + 3 + 4 = 10). That is dY,
  padded by K − 1 = 1, correlated with the kernel flipped in both axes: a transposed convolution.
  dW[a, b] = Σ_{i,j} x[i + a, j + b]·dY[i, j] = the sum of the 3×3 block of x at (a, b):
  54, 63 / 90, 99. And db = Σ dY = 9.
Then a random dY, stride 2, SAME padding and a 3-channel kernel against the naive loops.

Run: python examples/11_convolution.py
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import render
import jaxbp.ops as ops


def naive_backward(x, w, dy, stride, pads):
  """CS231n's conv_backward_naive, NHWC/HWIO: loop over outputs, add each window's share."""
  xp = np.pad(x, ((0, 0), *pads, (0, 0)))
  dxp, dw = np.zeros_like(xp), np.zeros_like(w)
  kh, kw = w.shape[:2]
  for n in range(dy.shape[0]):
    for i in range(dy.shape[1]):
      for j in range(dy.shape[2]):
        window = xp[n, i * stride:i * stride + kh, j * stride:j * stride + kw]   # [KH, KW, C]
        dxp[n, i * stride:i * stride + kh, j * stride:j * stride + kw] += w @ dy[n, i, j]
        dw += window[..., None] * dy[n, i, j]
  (top, _), (left, _) = pads
  return dxp[:, top:top + x.shape[1], left:left + x.shape[2]], dw, dy.sum(axis=(0, 1, 2))


def main():
  with jax.enable_x64(True):
    return _run()


def _grads(fn, x, w, b, dy, **kwargs):
  return jax.vjp(lambda x, w, b: fn(x, w, b, **kwargs), x, w, b)[1](dy)


def _run():
  x = np.arange(1.0, 17.0).reshape(1, 4, 4, 1)
  w = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
  b = np.zeros(1)
  dy = np.ones((1, 3, 3, 1))
  dx, dw, db = _grads(ops.conv2d, x, w, b, dy)
  print(render(["x", "dX (manual rule)"], [[" ".join(f"{v:3.0f}" for v in x[0, r, :, 0]),
                                           " ".join(f"{v:3.0f}" for v in dx[0, r, :, 0])] for r in range(4)]))
  print(f"\ndW (manual rule) = {np.asarray(dw[:, :, 0, 0]).tolist()}, db = {float(db[0]):g}\n")
  flipped = np.asarray(w[::-1, ::-1])
  transposed = jax.lax.conv_general_dilated(jnp.asarray(dy), jnp.asarray(flipped), (1, 1), [(1, 1), (1, 1)],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
  check = NoteCheck("Convolution on a 4×4 input: dX and dW by hand")
  by_hand = np.array([[1, 3, 3, 2], [4, 10, 10, 6], [4, 10, 10, 6], [3, 7, 7, 4]], float)
  check.add("dX by hand (corners 1, 2, 3, 4; inside 10)", by_hand, dx[0, :, :, 0], 1e-12)
  check.add("dX = dY padded by 1 ⋆ flip(w)", transposed, dx, 1e-12)
  check.add("dW by hand (3×3 block sums of x)", np.array([[54.0, 63.0], [90.0, 99.0]]), dw[:, :, 0, 0], 1e-12)
  check.add("db = Σ dY", 9.0, float(db[0]), 1e-12)
  rng = np.random.default_rng(0)
  x2, w2, b2 = rng.normal(size=(2, 5, 5, 3)), rng.normal(size=(3, 3, 3, 2)), rng.normal(size=2)
  dy2 = rng.normal(size=(2, 3, 3, 2))  # stride 2, SAME on 5: ⌈5/2⌉ = 3, pads (1, 1)
  manual = _grads(ops.conv2d, x2, w2, b2, dy2, stride=2, padding="SAME")
  naive = naive_backward(x2, w2, dy2, 2, ((1, 1), (1, 1)))
  auto = _grads(ops.reference.conv2d, x2, w2, b2, dy2, stride=2, padding="SAME")
  for name, got, loops, grad in zip(("dX", "dW", "db"), manual, naive, auto):
    check.add(f"{name}, stride 2, SAME, 3 channels = CS231n's naive loops", loops, got, 1e-12)
    check.add(f"{name}, stride 2, SAME, 3 channels = jax.grad", grad, got, 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
