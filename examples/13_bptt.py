"""Backpropagation through time on a 3-step RNN, node by node (note 004's chain rule, unrolled).

h_t = tanh(a_t), a_t = w_x·x_t + w_h·h_{t−1} + b, for t = 1, 2, 3, with scalars (D = H = 1) so that every
number can be checked by hand, and L = ½(h_3 − y)². The same weights act at every step, so the RNN is a
3-layer network whose layers share w_x, w_h, b: going backwards, each step turns the upstream gradient
dh_t into da_t = dh_t·(1 − h_t²) (tanh's local gradient), hands dh_{t−1} = da_t·w_h to the step before,
and adds its own share to the shared weights' gradients, ∂L/∂w_x += da_t·x_t, ∂L/∂w_h += da_t·h_{t−1},
∂L/∂b += da_t. The walk below is written in plain Python floats; jaxbp.ops.rnn's manual rule (one
backward lax.scan) and jax.grad of the plain reference must give the same numbers. |dh_t| shrinks at
every step back by |w_h·(1 − h_t²)| < 1: the vanishing gradient of note 004, in three steps.

Run: python examples/13_bptt.py
"""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import render
import jaxbp.ops as ops

X = [1.0, -1.0, 0.5]
W_X, W_H, B, H0, Y = 0.5, 0.8, 0.1, 0.0, 0.5


def by_hand():
  """The forward and the backward walk, one node at a time, on Python floats."""
  h, fwd = H0, []
  for t, x in enumerate(X, 1):
    a = W_X * x + W_H * h + B
    fwd.append({"t": t, "x": x, "h_prev": h, "a": a, "h": math.tanh(a)})
    h = fwd[-1]["h"]
  loss = 0.5 * (h - Y) ** 2
  dh, grads, bwd = h - Y, {"w_x": 0.0, "w_h": 0.0, "b": 0.0}, []
  for node in reversed(fwd):
    local = 1 - node["h"] ** 2
    da = dh * local
    grads["w_x"] += da * node["x"]
    grads["w_h"] += da * node["h_prev"]
    grads["b"] += da
    bwd.append({"t": node["t"], "dh": dh, "local": local, "da": da, "dx": da * W_X, "dh_prev": da * W_H})
    dh = da * W_H
  grads["h0"] = dh
  return fwd, loss, bwd, grads


def main():
  with jax.enable_x64(True):
    return _run()


def _loss(rnn):
  def loss(x, h0, w_x, w_h, b):
    _, h_last = rnn(x, h0, w_x, w_h, b)
    return 0.5 * jnp.sum((h_last - Y) ** 2)
  return loss


def _run():
  fwd, loss, bwd, hand = by_hand()
  print(f"Forward, L = ½(h_3 − y)² with y = {Y}: L = {loss:.6f}\n")
  print(render(["step t", "x_t", "h_{t−1}", "a_t = w_x·x_t + w_h·h_{t−1} + b", "h_t = tanh(a_t)"],
               [[n["t"], n["x"], f"{n['h_prev']:.6f}", f"{n['a']:.6f}", f"{n['h']:.6f}"] for n in fwd]), "\n")
  print("Backward through time (upstream × local = downstream, note 001):\n")
  print(render(["step t", "upstream dh_t", "local 1 − h_t²", "da_t", "∂L/∂x_t = da_t·w_x",
                "to step t−1: da_t·w_h"],
               [[n["t"], f"{n['dh']:.6f}", f"{n['local']:.6f}", f"{n['da']:.6f}", f"{n['dx']:.6f}",
                 f"{n['dh_prev']:.6f}"] for n in bwd]), "\n")
  args = (np.array(X).reshape(1, 3, 1), np.full((1, 1), H0), np.full((1, 1), W_X), np.full((1, 1), W_H),
          np.full(1, B))
  manual = jax.grad(_loss(ops.rnn), argnums=(0, 1, 2, 3, 4))(*args)
  autodiff = jax.grad(_loss(ops.reference.rnn), argnums=(0, 1, 2, 3, 4))(*args)
  check = NoteCheck("BPTT by hand vs the manual rule (jaxbp.ops.rnn) vs jax.grad")
  dx_hand = [n["dx"] for n in reversed(bwd)]
  for name, i, want in (("∂L/∂x_1..3", 0, dx_hand), ("∂L/∂h_0", 1, hand["h0"]), ("∂L/∂w_x", 2, hand["w_x"]),
                        ("∂L/∂w_h", 3, hand["w_h"]), ("∂L/∂b", 4, hand["b"])):
    check.add(f"{name}: manual rule = by hand", want, np.ravel(manual[i]), 1e-12)
    check.add(f"{name}: manual rule = jax.grad", np.ravel(autodiff[i]), np.ravel(manual[i]), 1e-12)
  shrink = [bwd[k + 1]["dh"] / bwd[k]["dh"] for k in range(2)]  # dh_2/dh_3, dh_1/dh_2
  check.add("dh_{t−1}/dh_t = w_h·(1 − h_t²), t = 3, 2", [W_H * n["local"] for n in bwd[:2]], shrink, 1e-12,
            remark="each < 1: vanishing")
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
