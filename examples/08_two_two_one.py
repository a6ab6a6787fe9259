"""Note 004: the 2-2-1 sigmoid network worked by hand, one update at lr 0.5, in exact float64.

x = (0.05, 0.10); hidden biases 0.35; output weights 0.40, 0.45, bias 0.60; target 0.01; E = ½(t − o)².
The note labels w11 = 0.15, w12 = 0.20 as the first hidden neuron's weights (for x1, x2), but the sums it
computes use 0.15 and 0.25 for h1 (z1 = 0.15·0.05 + 0.25·0.10 + 0.35 = 0.3825) and 0.20, 0.30 for h2;
its gradient section (w_ij from x_i to h_j) agrees with those sums. This script reproduces the sums the
note computes, so W1[i, j] is the weight from x_i to h_j: W1 = [[0.15, 0.20], [0.25, 0.30]].

The note rounds as it goes. For each of its figures the table shows: the figure; the same arithmetic
redone from the note's own rounded figures (within one unit of the figure's last digit, or the note
slipped); the exact
value; and how far the figure is from it. The one slip: σ(0.39) = 0.5963, which the note writes as 0.598.

With ``--html page.html`` it also writes a page that steps the backward pass as matrices: W1 [2, 2],
W2 [2, 1], the δ vectors δ2 = (o − t) ⊙ σ′(z2) and δ1 = (δ2·W2ᵀ) ⊙ σ′(z1), and ∂E/∂W = aᵀ·δ in W's shape.

Run: python examples/08_two_two_one.py [--full] [--html page.html]
"""

import argparse
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import trace
from jaxbp.insight.tables import NoteCheck
from jaxbp.insight.tables import bound
from jaxbp.insight.tables import fmt
from jaxbp.insight.tables import noise_floor
from jaxbp.insight.tables import render
import jaxbp.ops as ops

X, T, LR = [[0.05, 0.10]], [[0.01]], 0.5
PARAMS = dict(w1=[[0.15, 0.20], [0.25, 0.30]], b1=[0.35, 0.35], w2=[[0.40], [0.45]], b2=[0.60])
sig = lambda z: 1 / (1 + math.exp(-z))

# (name, the note's figure, decimals it prints, the note's arithmetic from its own earlier figures)
NOTE = [
    ("z1_1", 0.3825, 4, lambda n: 0.15 * 0.05 + 0.25 * 0.10 + 0.35),
    ("exp(-z1_1)", 0.682, 3, lambda n: math.exp(-n["z1_1"])),
    ("h1", 0.594, 3, lambda n: 1 / (1 + n["exp(-z1_1)"])),
    ("z1_2", 0.39, 2, lambda n: 0.20 * 0.05 + 0.30 * 0.10 + 0.35),
    ("h2", 0.598, 3, lambda n: sig(n["z1_2"])),
    ("z2", 1.1067, 4, lambda n: 0.40 * n["h1"] + 0.45 * n["h2"] + 0.60),
    ("exp(-z2)", 0.331, 3, lambda n: math.exp(-n["z2"])),
    ("o", 0.751, 3, lambda n: 1 / (1 + n["exp(-z2)"])),
    ("E", 0.27454, 5, lambda n: 0.5 * (0.01 - n["o"]) ** 2),
    ("σ'(z2)", 0.187, 3, lambda n: n["o"] * (1 - n["o"])),
    ("δ2", 0.1386, 4, lambda n: (n["o"] - 0.01) * n["σ'(z2)"]),
    ("∂E/∂w2_1", 0.0823, 4, lambda n: n["δ2"] * n["h1"]),
    ("∂E/∂w2_2", 0.0829, 4, lambda n: n["δ2"] * n["h2"]),
    ("σ'(z1_1)", 0.241, 3, lambda n: n["h1"] * (1 - n["h1"])),
    ("σ'(z1_2)", 0.240, 3, lambda n: n["h2"] * (1 - n["h2"])),
    ("δ1_1", 0.01336, 5, lambda n: 0.40 * n["δ2"] * n["σ'(z1_1)"]),
    ("δ1_2", 0.01497, 5, lambda n: 0.45 * n["δ2"] * n["σ'(z1_2)"]),
    ("∂E/∂w11", 0.000668, 6, lambda n: n["δ1_1"] * 0.05),
    ("∂E/∂w21", 0.001336, 6, lambda n: n["δ1_1"] * 0.10),
    ("∂E/∂w12", 0.000749, 6, lambda n: n["δ1_2"] * 0.05),
    ("∂E/∂w22", 0.001497, 6, lambda n: n["δ1_2"] * 0.10),
    ("w2_1 new", 0.35885, 5, lambda n: 0.40 - LR * n["∂E/∂w2_1"]),
    ("w2_2 new", 0.40855, 5, lambda n: 0.45 - LR * n["∂E/∂w2_2"]),
    ("b2 new", 0.5307, 4, lambda n: 0.60 - LR * n["δ2"]),
    ("w11 new", 0.149666, 6, lambda n: 0.15 - LR * n["∂E/∂w11"]),
    ("w21 new", 0.249332, 6, lambda n: 0.25 - LR * n["∂E/∂w21"]),
]
SLIPS = {"h2": "σ(0.39) = 0.5963, not 0.598"}


def loss(w1, b1, w2, b2, x, t, o=ops):
  h = o.sigmoid(o.linear(x, w1, b1))
  return o.squared_error(o.sigmoid(o.linear(h, w2, b2)), t)


def exact_values(p, g):
  """Every figure of the note, exactly: forward from the params, gradients from the manual rules."""
  x = jnp.asarray(X)
  z1 = ops.linear(x, p["w1"], p["b1"])[0]
  h = ops.sigmoid(z1)
  z2 = ops.linear(h[None], p["w2"], p["b2"])[0, 0]
  o = ops.sigmoid(z2)
  new = {k: p[k] - LR * g[k] for k in p}
  v = {"z1_1": z1[0], "exp(-z1_1)": jnp.exp(-z1[0]), "h1": h[0], "z1_2": z1[1], "h2": h[1],
       "z2": z2, "exp(-z2)": jnp.exp(-z2), "o": o, "E": loss(**p, x=x, t=jnp.asarray(T)),
       "σ'(z2)": o * (1 - o), "δ2": g["b2"][0], "∂E/∂w2_1": g["w2"][0, 0],
       "∂E/∂w2_2": g["w2"][1, 0], "σ'(z1_1)": h[0] * (1 - h[0]), "σ'(z1_2)": h[1] * (1 - h[1]),
       "δ1_1": g["b1"][0], "δ1_2": g["b1"][1], "∂E/∂w11": g["w1"][0, 0], "∂E/∂w21": g["w1"][1, 0],
       "∂E/∂w12": g["w1"][0, 1], "∂E/∂w22": g["w1"][1, 1], "w2_1 new": new["w2"][0, 0],
       "w2_2 new": new["w2"][1, 0], "b2 new": new["b2"][0], "w11 new": new["w1"][0, 0],
       "w21 new": new["w1"][1, 0]}
  return {k: float(val) for k, val in v.items()}, new


def delta_rule(p):
  """The note's vectorised backward: δ2 = (o − t)σ'(z2), δ1 = (W2 δ2) ⊙ σ'(z1), ∂W = a δᵀ."""
  x, w1, b1, w2, b2 = (np.asarray(p[k]) for k in ("x", "w1", "b1", "w2", "b2"))
  h = 1 / (1 + np.exp(-(x @ w1 + b1)))
  o = 1 / (1 + np.exp(-(h @ w2 + b2)))
  d2 = (o - np.asarray(T)) * o * (1 - o)
  d1 = (d2 @ w2.T) * h * (1 - h)
  return dict(w1=x.T @ d1, b1=d1[0], w2=h.T @ d2, b2=d2[0])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
  parser.add_argument("--full", action="store_true",
                      help="print every element of the node table (4-D local Jacobians included)")
  parser.add_argument("--html", metavar="FILE", help="write the page that steps the backward pass as matrices")
  opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
  with jax.enable_x64(True):
    return _run(opts.full, opts.html)


def captions(t):
  """Note 004's notation for each node of the trace of ``loss``: the δ vectors and where ⊙σ′ enters."""
  by_op = {}
  for node in t.nodes:
    by_op.setdefault(node.op, []).append(node)
  (lin1, lin2), (sig1, sig2), (err,) = by_op["linear"], by_op["sigmoid"], by_op["squared_error"]
  o, h = np.asarray(sig2.value), np.asarray(sig1.value)
  d2, d1 = np.asarray(sig2.downstream[0]), np.asarray(sig1.downstream[0])
  v = lambda a: ", ".join(f"{x:.6f}" for x in np.ravel(a))
  return {
      err.name: f"E = ½(t − o)², so ∂E/∂o = o − t = {v(o - np.asarray(T))}.",
      sig2.name: f"δ2 = ∂E/∂z2 = (o − t) ⊙ σ′(z2), with σ′(z2) = o(1 − o) = {v(o * (1 - o))}: δ2 = {v(d2)}.",
      lin2.name: (f"z2 = h·W2 + b2. ∂E/∂W2 = hᵀ·δ2 = [{v(lin2.downstream[1])}], W2's shape [2, 1]; "
                  f"∂E/∂b2 = δ2; ∂E/∂h = δ2·W2ᵀ = [{v(lin2.downstream[0])}]."),
      sig1.name: (f"δ1 = (δ2·W2ᵀ) ⊙ σ′(z1) (note 004's δ(l) = (W(l+1)ᵀ δ(l+1)) ⊙ σ′(z(l))), with σ′(z1) = "
                  f"h(1 − h) = [{v(h * (1 - h))}]: δ1 = [{v(d1)}]."),
      lin1.name: (f"z1 = x·W1 + b1. ∂E/∂W1 = xᵀ·δ1, a [2, 1]·[1, 2] product in W1's shape [2, 2]: "
                  f"[{v(lin1.downstream[1])}]; ∂E/∂b1 = δ1."),
  }


def write_page(t, path, check=True):
  """The page of the 2-2-1 network's backward pass as matrices (``jaxbp.insight.tensor_page``)."""
  from jaxbp.insight import tensor_page
  page = tensor_page.to_html(t, "½(t − σ(σ(x·W1 + b1)·W2 + b2))²  (note 004)", 6, check, captions(t))
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  print(f"wrote {path}")


def _run(full, html=None):
  p = {k: jnp.asarray(v) for k, v in PARAMS.items()}
  args = dict(x=jnp.asarray(X), t=jnp.asarray(T))
  print("The network, node by node (jaxbp.trace over the manual rules; arrays of more than two elements\n"
        "and the local Jacobians ∂z/∂x, of shape z.shape + x.shape, as shape and norm: --full prints them):")
  t = trace(loss, **p, **args)
  print(t.table(decimals=5, full=full), "\n")  # five decimals: the table fits in 120 columns
  if html:
    write_page(t, html)
  g = {k: t.grads[k] for k in p}
  exact, new = exact_values(p, g)
  check = NoteCheck("Note 004: the 2-2-1 network")
  ref = jax.grad(loss, argnums=(0, 1, 2, 3))(*p.values(), **args, o=ops.reference)
  hand = delta_rule({**p, **args})
  for k, r in zip(p, ref):
    check.add(f"∂E/∂{k}: manual rules = jax.grad of references", r, g[k], 1e-12)
    check.add(f"∂E/∂{k}: manual rules = the note's δ formulas", hand[k], g[k], 1e-12)
  _compare_with_note(exact, check)
  labelled = 0.15 * 0.05 + 0.20 * 0.10 + 0.35
  check.add("z1_1 with the note's labels, w11·x1 + w12·x2 + b", 0.3825, labelled, 1e-12,
            "the labels give 0.3775; the note's sum uses w21 = 0.25", expect_differ=True)
  e_after = loss(**new, **args)
  print(f"one step at lr {LR}: E {fmt(exact['E'], 10)} → {fmt(e_after, 10)}")
  print(render(["parameter", "before", "∂E/∂·", "after"],
               [[k, fmt(p[k], 8), fmt(g[k], 10), fmt(new[k], 8)] for k in p]), "\n")
  first_order = LR * sum(float(jnp.sum(g[k] ** 2)) for k in p)  # −ΔE ≈ lr·‖∂E/∂θ‖²
  check.add("E's decrease = lr·‖∂E/∂θ‖² to first order (10%)", first_order, exact["E"] - e_after,
            0.1 * first_order)
  print(check.report())
  return check.exit_code()


def _compare_with_note(exact, check):
  """The table of the note's figures, and the checks of each against its own arithmetic and exact."""
  figures = {name: value for name, value, _, _ in NOTE}
  rows, beyond, own_units, relative = [], [], [], []
  for name, value, decimals, redo in NOTE:
    own, unit = redo(figures), 10.0 ** -decimals
    if name in SLIPS:
      check.add(f"{name}: note = its own arithmetic", value, own, unit, SLIPS[name],
                expect_differ=True)
    else:
      own_units.append(abs(value - own) / unit)
    off = value - exact[name]
    relative.append(abs(off / exact[name]))
    if abs(off) > unit / 2 + 1e-12:
      beyond.append(name)
    floor = noise_floor(value, exact[name])
    shown = 0.0 if abs(off) < floor else off  # a figure the note has exactly: the difference is round-off
    rows.append([name, f"{value:.{decimals}f}", fmt(own, decimals + 2), fmt(exact[name], 10),
                 bound(floor) if abs(off) < floor else f"{off:+.1e}", f"{100 * shown / exact[name]:+.2f}%"])
  print(render(["figure", "note", "note's arithmetic", "exact (jaxbp, float64)", "note − exact",
                "relative"], rows), "\n")
  print("Further from the exact value than half their last digit (rounding carried forward, and\n"
        f"h2's slip in everything computed from it): {', '.join(beyond)}\n")
  check.add("every other figure = its own arithmetic (in units of its last digit)",
            0.0, max(own_units), 1.0 + 1e-6, "rounding as it goes")
  check.add("every figure within 0.5% of exact (max relative difference)", 0.0, max(relative),
            0.005)


if __name__ == "__main__":
  sys.exit(main())
