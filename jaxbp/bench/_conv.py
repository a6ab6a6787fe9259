"""Bench rows for conv2d and the pools: the manual rule against ``jax.grad`` of its plain reference.

For each op and size, one jitted step computes the gradient of ⟨op(inputs), c⟩ (a fixed random
cotangent c) with respect to every float input, once through the hand-written rule and once through
``jax.grad`` of ``jaxbp.ops.reference``; the two are timed interleaved in rounds (``_timing``) and their
compiled temporary memory is read from XLA. A PyTorch eager column is added when torch is installed.

Run on its own: ``python -m jaxbp.bench._conv [--tiny]``; ``jaxbp bench`` includes it.
"""

import argparse
import importlib.util
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.bench._compare import AUTODIFF
from jaxbp.bench._compare import MANUAL
from jaxbp.bench._compare import manual_vs_autodiff
from jaxbp.insight import tables


class Case(NamedTuple):
  op: str
  size: str        # "small", "realistic", or a pool's window: "overlapping" (3×3, stride 2), "global"
  shapes: tuple    # input shapes: x (and w, b for conv2d)
  kwargs: dict


FULL = (
    Case("conv2d", "small", ((64, 8, 8, 16), (3, 3, 16, 32), (32,)), {"padding": "SAME"}),
    Case("conv2d", "realistic", ((32, 32, 32, 32), (3, 3, 32, 64), (64,)), {"padding": "SAME"}),
    Case("max_pool2d", "small", ((64, 8, 8, 32),), {"window": 2}),
    Case("max_pool2d", "realistic", ((32, 32, 32, 64),), {"window": 2}),
    Case("max_pool2d", "overlapping", ((32, 32, 32, 64),), {"window": 3, "stride": 2}),
    Case("max_pool2d", "global", ((32, 16, 16, 128),), {"window": 16}),
    Case("avg_pool2d", "small", ((64, 8, 8, 32),), {"window": 2}),
    Case("avg_pool2d", "realistic", ((32, 32, 32, 64),), {"window": 2}),
)
TINY = tuple(c._replace(shapes=tuple((2, 4, 4, s[3]) if len(s) == 4 and s[0] != 3 else s for s in c.shapes),
                        kwargs={**c.kwargs, "window": 4} if c.size == "global" else c.kwargs)
             for c in FULL if c.size in ("small", "global"))
TORCH = "torch eager"


def _inputs(case: Case) -> tuple:
  rng = np.random.default_rng(0)
  return tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in case.shapes)


def _cotangent(case: Case, args: tuple) -> jax.Array:
  out = jax.eval_shape(lambda *a: getattr(ops.reference, case.op)(*a, **case.kwargs), *args)
  return jnp.asarray(np.random.default_rng(1).normal(size=out.shape), jnp.float32)


def _step(fn: Any, case: Case, args: tuple):
  """The jitted gradient of ⟨fn(*args), c⟩ w.r.t. every input, compiled once. The cotangent c is an
  argument, not a constant: XLA would otherwise fold a linear op's whole gradient at compile time."""
  loss = lambda c, *a: jnp.sum(fn(*a, **case.kwargs) * c)
  grad = jax.jit(jax.grad(loss, tuple(range(1, len(args) + 1))))
  return grad.lower(_cotangent(case, args), *args).compile()


def _torch_block(case: Case):
  """The same gradient in PyTorch eager (NCHW), or None when torch lacks the op or the padding."""
  import torch
  import torch.nn.functional as F  # noqa: N812 (PyTorch's own spelling)
  gen = torch.Generator().manual_seed(0)
  nchw = lambda s: (s[0], s[3], s[1], s[2])
  if case.op == "conv2d":
    x = torch.randn(nchw(case.shapes[0]), generator=gen, requires_grad=True)
    kh, kw, c, o = case.shapes[1]
    w = torch.randn((o, c, kh, kw), generator=gen, requires_grad=True)
    b = torch.randn((o,), generator=gen, requires_grad=True)
    leaves: tuple = (x, w, b)
    fn = lambda: F.conv2d(x, w, b, padding="same")
  else:
    x = torch.randn(nchw(case.shapes[0]), generator=gen, requires_grad=True)
    pool = F.max_pool2d if case.op == "max_pool2d" else F.avg_pool2d
    leaves = (x,)
    fn = lambda: pool(x, case.kwargs["window"], case.kwargs.get("stride"))
  ct = torch.randn(fn().shape, generator=gen)

  def block(reps):
    for _ in range(reps):
      torch.autograd.grad(fn(), leaves, ct)
  return block


def measure_case(case: Case, rounds: int, target_s: float, with_torch: bool) -> dict:
  """Step time (median ms) and compiled temporary memory of each variant, and the paired time ratio."""
  args = _inputs(case)
  exes = {MANUAL: _step(getattr(ops, case.op), case, args),
          AUTODIFF: _step(getattr(ops.reference, case.op), case, args)}
  call = (_cotangent(case, args), *args)
  _, row = manual_vs_autodiff(exes, dict.fromkeys(exes, call), rounds=rounds, target_s=target_s,
                              extra={TORCH: _torch_block(case)} if with_torch else None)
  return {"op": case.op, "size": case.size, "shapes": [list(s) for s in case.shapes], "kwargs": case.kwargs,
          **row}


def measure(tiny: bool, rounds: int, target_s: float, with_torch: bool | None = None) -> list:
  """Every case of ``TINY`` or ``FULL``; torch only where it imports (``with_torch`` None: if it does)."""
  if with_torch is None:
    with_torch = importlib.util.find_spec("torch") is not None
  return [measure_case(case, rounds, target_s, with_torch) for case in (TINY if tiny else FULL)]


def _window_text(kwargs: dict) -> str:
  """A pool's window (and stride, when not the window) as the table writes it: ", 3×3 stride 2"."""
  if "window" not in kwargs:
    return ""
  k, stride = kwargs["window"], kwargs.get("stride")
  return f", {k}×{k}" + ("" if stride is None else f" stride {stride}")


def render(rows: list) -> str:
  """The rows as one Markdown table: ms per variant, temporary memory, and manual / jax.grad ratios."""
  variants = [MANUAL, AUTODIFF] + ([TORCH] if any(TORCH in r["ms"] for r in rows) else [])
  out = []
  for r in rows:
    x = "×".join(str(n) for n in r["shapes"][0])
    mem = r["memory_ratio"]
    size = f"{r['size']} (x {x}{_window_text(r['kwargs'])})"
    out.append([r["op"], size, *(f"{r['ms'][v]:.3f}" if v in r["ms"] else "–" for v in variants),
                *(f"{r['temp_bytes'][v] / 2**20:.3f}" for v in (MANUAL, AUTODIFF)),
                f"{r['time_ratio']:.3f}", "–" if mem is None else f"{mem:.3f}"])
  headers = ["op", "size", *(f"{v} ms" for v in variants), "manual temp MiB", "jax.grad temp MiB",
             "time manual/jax.grad", "memory manual/jax.grad"]
  return "Convolution and pooling rules (gradient of ⟨op(x), c⟩, float32):\n\n" + \
      tables.render(headers, out, markdown=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxbp.bench._conv", description=__doc__)
  parser.add_argument("--tiny", action="store_true", help="toy sizes, 2 rounds")
  parser.add_argument("--rounds", type=int, default=None, help="rounds of interleaved timing (default 12)")
  args = parser.parse_args(argv)
  rounds = args.rounds or (2 if args.tiny else 12)
  print(render(measure(args.tiny, rounds, 0.002 if args.tiny else 0.25)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
