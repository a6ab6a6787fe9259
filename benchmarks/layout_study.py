"""Which layout of the weight gradient dW = Xᵀ·dY runs fastest? The evidence behind jaxbp.ops.linalg.

The formula is fixed; only how XLA is asked to lay out the product changes:
  as-is       X2.T @ G2, the rule itself (``linalg._weight_grad``): a product contracting the leading
              (batch) axis of both operands. XLA:CPU hands it to Eigen rather than to its YNNPACK GEMM.
  xT-copy     optimization_barrier(X2.T) @ G2: X transposed into a fresh [D, N] buffer first, so the
              product is an ordinary row-major GEMM (YNNPACK on CPU).
  gT-copy     (optimization_barrier(G2.T) @ X2).T: the upstream gradient transposed instead.

Measured on a 2-core EPYC with jax 0.10.2, as-is ran at the GEMM ceiling and xT-copy made the large
MLP's step ~3% slower and its temporary memory larger (the input's transposed copy), so the rule
writes the product as-is; docs/performance.md has the figures.

Each layout is swapped into ``jaxbp.ops.linalg._weight_grad`` for the duration of one compile; the
steps then run interleaved in rounds with ``jax.grad`` of the plain model (and PyTorch eager, when
installed), as in ``jaxbp bench``. Run: ``python benchmarks/layout_study.py [--models large] [--rounds 9]``.
"""

import argparse

import jax
from jax import lax

from jaxbp import ops
from jaxbp.bench import FULL
from jaxbp.bench import _models
from jaxbp.bench import _timing
from jaxbp.insight import cost
from jaxbp.ops import linalg


def xt_copy(x, g):
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  return lax.optimization_barrier(x2.T) @ g2


def gt_copy(x, g):
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  return (lax.optimization_barrier(g2.T) @ x2).T


LAYOUTS = {"as-is": linalg._weight_grad, "xT-copy": xt_copy, "gT-copy": gt_copy}


def _compile_with(layout, step, params, x, labels):
  original = linalg._weight_grad
  linalg._weight_grad = layout
  try:
    return step.lower(params, x, labels).compile()
  finally:
    linalg._weight_grad = original


def study(name, rounds, target_s, with_torch):
  sizes, batch = FULL["models"][name]
  spec = _models.ModelSpec(name, sizes, batch)
  params, x, labels = _models.make_batch(spec)
  executables = {"jax.grad": _models.make_step(ops.reference).lower(params, x, labels).compile()}
  for layout_name, layout in LAYOUTS.items():
    # A fresh jit per layout: the rule's backward is traced again with the layout swapped in.
    executables[layout_name] = _compile_with(layout, _models.make_step(ops), params, x, labels)
  blocks = {k: _models.jax_block(exe, params, x, labels) for k, exe in executables.items()}
  if with_torch:
    blocks["torch eager"] = _models.torch_block(spec)
  shared = _timing.calibrate(blocks["jax.grad"], target_s)  # the same steps per block for every variant
  timings = _timing.interleave(blocks, rounds, dict.fromkeys(blocks, shared))
  print(f"\n### {spec.label}\n")
  print("| variant | step ms (median) | / jax.grad (paired) | temp MiB | bytes accessed MiB |")
  print("|---|---|---|---|---|")
  for k, t in timings.items():
    c = cost.compiled_cost(None, compiled=executables[k]) if k in executables else None
    mem = f"{c.temp_bytes / 2**20:.2f} | {c.bytes_accessed / 2**20:.1f}" if c else "– | –"
    ratio = _timing.paired_ratio(t, timings["jax.grad"])
    print(f"| {k} | {t.median * 1e3:.3f} | {ratio:.3f} | {mem} |")


def _product_block(f, x, g):
  """``block(reps)``: ``reps`` calls of ``f(x, g)``, keeping only the last result alive, then wait."""
  def block(reps):
    for _ in range(reps):
      out = f(x, g)
    out.block_until_ready()
  return block


def gemm_study(rounds, target_s):
  """The weight-gradient product alone, at the large MLP's layer shapes, in each layout."""
  n = FULL["models"]["large"][1]
  print("\n### dW = Xᵀ·dY alone (large MLP shapes, N = %d): GFLOP/s, median\n" % n)
  print("| D x M | " + " | ".join(LAYOUTS) + " |")
  print("|---|" + "---|" * len(LAYOUTS))
  for d, m in ((784, 2048), (2048, 2048), (2048, 10)):
    key = jax.random.PRNGKey(0)
    x, g = jax.random.normal(key, (n, d)), jax.random.normal(key, (n, m))
    blocks = {name: _product_block(jax.jit(layout), x, g) for name, layout in LAYOUTS.items()}
    shared = _timing.calibrate(blocks["as-is"], target_s)
    timings = _timing.interleave(blocks, rounds, dict.fromkeys(blocks, shared))
    rates = [f"{2 * n * d * m / timings[k].median / 1e9:.1f}" for k in LAYOUTS]
    print(f"| {d} x {m} | " + " | ".join(rates) + " |")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="small,large,deep")
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--target-s", type=float, default=0.25, help="seconds per timed block")
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args()
  with_torch = not args.no_torch and _models.torch_available()[0]
  print(f"backend {jax.default_backend()}, jax {jax.__version__}")
  gemm_study(args.rounds, args.target_s)
  for name in args.models.split(","):
    study(name, args.rounds, args.target_s, with_torch)


if __name__ == "__main__":
  main()
