"""Note 002, homework 3.1, 3.2, 3.3: each graph traced node by node, loss (ŷ − y)² (no ½).

3.1: ŷ = x·w, x = 2, w = 1, y = 4 → loss 4, ∂loss/∂w = −8.
3.2: ŷ = x·w + b, x = 1, w = 1, b = 2, y = 2 → loss 1, ∂w = 2, ∂b = 2.
3.3: ŷ = w1·x² + w2·x + b, w1 = w2 = 2, x = 2, b = 1, y = 9 → loss 16, ∂w1 = 32, ∂w2 = 16, ∂b = 8.
The note works 3.2 and 3.3 only up to ∂w (∂b = 2 and 8 are in seeds/README.md); in 3.2 it writes
∂loss/∂y for ∂loss/∂ŷ. Each expression goes through `jaxbp trace`'s parser, so the same tables come out
of e.g.  jaxbp trace "(w1*x**2 + w2*x + b - y)**2" w1=2 w2=2 x=2 b=1 y=9

Run: python examples/06_homework.py
"""

import sys

import jax

from jaxbp import trace
from jaxbp.insight.expr import parse
from jaxbp.insight.tables import NoteCheck
import jaxbp.ops as ops

HOMEWORK = [
    ("3.1", "(x*w - y)**2", dict(x=2.0, w=1.0, y=4.0),
     dict(loss=4.0, w=-8.0), dict(s0=2.0, s1=-2.0)),  # ŷ = 2, r = −2
    ("3.2", "(x*w + b - y)**2", dict(x=1.0, w=1.0, b=2.0, y=2.0),
     dict(loss=1.0, w=2.0, b=2.0), dict(s0=1.0, s1=3.0, s2=1.0)),  # x·w = 1, ŷ = 3, r = 1
    ("3.3", "(w1*x**2 + w2*x + b - y)**2", dict(w1=2.0, x=2.0, w2=2.0, b=1.0, y=9.0),
     dict(loss=16.0, w1=32.0, w2=16.0, b=8.0),
     dict(s1=8.0, s2=4.0, s3=12.0, s4=13.0, s5=4.0)),  # z1, z2, z, ŷ, r
]


def main():
  with jax.enable_x64(True):
    return _run()


def _run():
  check = NoteCheck("Note 002 homework: the note's figures vs the trace")
  for label, source, inputs, grads, values in HOMEWORK:
    t = trace(parse(source).function(ops), **inputs)
    print(f"Homework {label}: loss = {source}\n{t.table(decimals=2)}\n")
    check.add(f"{label} loss", grads["loss"], t.output, 1e-12)
    for name in [k for k in grads if k != "loss"]:
      check.add(f"{label} ∂loss/∂{name}", grads[name], t.grads[name], 1e-12)
    nodes = {n.name: n for n in t.nodes}
    for name, value in values.items():
      check.add(f"{label} node {name} ({nodes[name].op})", value, nodes[name].value, 1e-12)
    r = nodes[nodes["L"].inputs[0]]  # the residual ŷ − y, which the square L reads
    check.add(f"{label} ∂loss/∂r = 2r (the upstream r receives from the square)", 2 * r.value,
              r.upstream, 1e-12)
  print(check.report())
  return check.exit_code()


if __name__ == "__main__":
  sys.exit(main())
