"""Note 001: the flat circuit L = σ(w0·x0 + w1·x1 + w2), node by node, as the note's flat code does it.

The note's backward pass, line by line (grad_s3 = grad_L·(1 − L)·L, the add gates pass it on, the multiply
gates swap their inputs) is written out below in plain Python floats; jaxbp.trace does the same walk over
the jaxpr of the function built from jaxbp.ops, and every node's gradient agrees. The figures the notes
print (CS231n's slide) are the two-decimal ones: 0.73 forward, −0.20, 0.39, −0.39, −0.59, 0.20 backward.

Run: python examples/02_flat_circuit.py  (or: jaxbp trace "sigmoid(w0*x0 + w1*x1 + w2)" w0=2 ...)
"""

import math
import sys

import jax

from jaxbp import trace
from jaxbp.insight.tables import NoteCheck
import jaxbp.ops as ops

INPUTS = dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
NOTE = dict(L=0.73, w0=-0.20, x0=0.39, w1=-0.39, x1=-0.59, w2=0.20)  # two decimals, as printed


def f(w0, x0, w1, x1, w2):
  s0 = ops.multiply(w0, x0)
  s1 = ops.multiply(w1, x1)
  s2 = ops.add(s0, s1)
  s3 = ops.add(s2, w2)
  return ops.sigmoid(s3)


def flat(w0, x0, w1, x1, w2):
  """The note's flat forward and backward code, verbatim, on Python floats."""
  s0 = w0 * x0
  s1 = w1 * x1
  s2 = s0 + s1
  s3 = s2 + w2
  L = 1 / (1 + math.exp(-s3))
  grad_L = 1.0
  grad_s3 = grad_L * (1 - L) * L
  grad_w2 = grad_s2 = grad_s3
  grad_s0 = grad_s1 = grad_s2
  grad_w1, grad_x1 = grad_s1 * x1, grad_s1 * w1
  grad_w0, grad_x0 = grad_s0 * x0, grad_s0 * w0
  return dict(L=L, s3=grad_s3, s2=grad_s2, s1=grad_s1, s0=grad_s0, w0=grad_w0, x0=grad_x0,
              w1=grad_w1, x1=grad_x1, w2=grad_w2)


def main():
  with jax.enable_x64(True):  # exact values: every number below in float64
    return _run()


def _run():
  t = trace(f, **INPUTS)
  print("L = σ(w0·x0 + w1·x1 + w2), node by node (jaxbp.trace over the manual rules)\n")
  print(t.table(decimals=6), "\n")
  hand = flat(**INPUTS)
  check = NoteCheck("Note 001: the circuit's figures (two decimals) vs computed")
  check.add("L", NOTE["L"], t.output, 0.005)
  for name in INPUTS:
    check.add(f"∂L/∂{name}", NOTE[name], t.grads[name], 0.005)
  for node in t.nodes[:-1]:  # the upstream gradient at each s_k equals the flat code's grad_s_k
    check.add(f"upstream at {node.name} = flat code's grad_{node.name}", hand[node.name],
              node.upstream, 1e-12)
  for name in INPUTS:
    check.add(f"∂L/∂{name} = flat code's grad_{name}", hand[name], t.grads[name], 1e-12)
    check.add(f"∂L/∂{name} = jax.grad", t.autodiff[name], t.grads[name], 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
