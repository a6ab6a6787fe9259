"""Sequence rules in the benchmark: embedding, rnn and lstm, manual rule vs ``jax.grad`` of its reference.

For each rule and size, the step is ``jax.value_and_grad`` of L = Σ out ⊙ u (u a fixed random cotangent
of the output, the final states' included) with respect to every float input, jitted. Both variants are
timed interleaved in rounds (``_timing``), reported as the median of the per-round paired ratios, and
their compiled temporary memory is read from XLA's ``memory_analysis()`` (deterministic).

Sizes: a small one, and a realistic one (the LSTM at 256 hidden over 128 steps, batch 32, as issue 10
asks; the embedding a 32,768 × 512 table looked up by 32 × 128 ids).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.bench._compare import AUTODIFF
from jaxbp.bench._compare import MANUAL
from jaxbp.bench._compare import manual_vs_autodiff
from jaxbp.insight import tables

# (rule, label, sizes): embedding (V, D, N, T); rnn and lstm (N, T, D, H).
FULL = [("embedding", "small", (13, 32, 64, 16)), ("embedding", "realistic", (32768, 512, 32, 128)),
        ("rnn", "small", (8, 16, 32, 32)), ("rnn", "realistic", (32, 128, 256, 256)),
        ("lstm", "small", (8, 16, 32, 32)), ("lstm", "realistic", (32, 128, 256, 256))]
TINY = [("embedding", "tiny", (5, 3, 2, 4)), ("rnn", "tiny", (2, 3, 2, 2)), ("lstm", "tiny", (2, 3, 2, 2))]
GOALS = {"time": 1.05, "memory": 1.0}


def _inputs(rule: str, sizes: tuple, rng: np.random.Generator) -> tuple[tuple, tuple[int, ...]]:
  """The rule's arguments at ``sizes`` and the positions of the float ones (differentiated)."""
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape) * 0.1, jnp.float32)
  if rule == "embedding":
    v, d, n, t = sizes
    return (jnp.asarray(rng.integers(0, v, size=(n, t)), jnp.int32), normal(v, d)), (1,)
  n, t, d, h = sizes
  k = 4 if rule == "lstm" else 1
  states = (normal(n, h),) * (2 if rule == "lstm" else 1)
  args = (normal(n, t, d), *states, normal(d, k * h), normal(h, k * h), normal(k * h))
  return args, tuple(range(len(args)))


def _step(fn: Callable[..., Any], args: tuple, wrt: tuple[int, ...], cotangent: Any) -> Any:
  """Jitted ``step(floats, cotangent, others)``: every array is an argument, none a folded constant."""
  def loss(floats, cotangent, others):
    full, f, o = [], iter(floats), iter(others)
    for i in range(len(args)):
      full.append(next(f) if i in wrt else next(o))
    out = fn(*full)
    return sum(jnp.sum(y * u) for y, u in zip(jax.tree_util.tree_leaves(out), cotangent))
  return jax.jit(jax.value_and_grad(loss))


def measure_rule(rule: str, label: str, sizes: tuple, *, rounds: int, target_s: float) -> dict:
  """Times and sizes the manual rule's step against ``jax.grad`` of its reference."""
  rng = np.random.default_rng(0)
  args, wrt = _inputs(rule, sizes, rng)
  out = jax.eval_shape(getattr(ops, rule), *args)
  cotangent = [jnp.asarray(rng.normal(size=o.shape), o.dtype) for o in jax.tree_util.tree_leaves(out)]
  floats = tuple(args[i] for i in wrt)
  others = tuple(a for i, a in enumerate(args) if i not in wrt)
  variants = {MANUAL: getattr(ops, rule), AUTODIFF: getattr(ops.reference, rule)}
  call = (floats, cotangent, others)
  compiled = {name: _step(fn, args, wrt, cotangent).lower(*call).compile() for name, fn in variants.items()}
  _, row = manual_vs_autodiff(compiled, dict.fromkeys(compiled, call), rounds=rounds, target_s=target_s)
  return {"rule": rule, "size": label, "sizes": list(sizes), **row}


def measure(tiny: bool, rounds: int, target_s: float, with_torch: bool | None = None) -> list[dict]:
  """Every case of ``TINY`` or ``FULL`` (no PyTorch column here: ``with_torch`` is accepted and unused)."""
  del with_torch
  return [measure_rule(rule, label, sizes, rounds=rounds, target_s=target_s)
          for rule, label, sizes in (TINY if tiny else FULL)]


def _shape(rule: str, sizes: list) -> str:
  if rule == "embedding":
    v, d, n, t = sizes
    return f"table {v}×{d}, ids {n}×{t}"
  n, t, d, h = sizes
  return f"N {n}, T {t}, D {d}, H {h}"


def render(rows: list[dict]) -> str:
  """The section as Markdown: one row per rule and size."""
  mib = lambda b: f"{b / 2**20:.3f} MiB"
  body = [[r["rule"], r["size"], _shape(r["rule"], r["sizes"]), f"{r['ms'][MANUAL]:.3f}",
           f"{r['ms'][AUTODIFF]:.3f}", f"{r['time_ratio']:.3f}", mib(r["temp_bytes"][MANUAL]),
           mib(r["temp_bytes"][AUTODIFF]),
           "–" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}"] for r in rows]
  headers = ["rule", "size", "shape", "manual ms", "jax.grad ms", "time ratio (paired median)",
             "manual temp", "jax.grad temp", "memory ratio"]
  return (f"## Sequence rules: manual vs jax.grad (goals: time ≤ {GOALS['time']}×, memory ≤ "
          f"{GOALS['memory']}×)\n\n" + tables.render(headers, body, markdown=True) + "\n")
