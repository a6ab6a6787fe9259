"""One long-context training step, built, compiled and run in a fresh process (``jaxbp.bench._long``).

``python -m jaxbp.bench._long_child VARIANT T DTYPE BUDGET GRADS_NPZ OUT_JSON`` compiles the step of
``VARIANT`` at T tokens and writes its compiled temporary memory to ``OUT_JSON`` (``{"temp_bytes", "ran":
false}``). If that is at most ``BUDGET`` bytes, it runs the step once, timed (a step under ``QUICK_S`` once
more, and the second is timed), saves the gradients to ``GRADS_NPZ`` and writes ``{"temp_bytes", "ran":
true, "step_s", "peak_rss_bytes"}``: the peak is this process's ``ru_maxrss``, so it is the peak of that one
T (the import of JAX and the compilation included). A budget of 0 compiles only.
"""

import json
import resource
import sys
import time
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.models.llama import Llama
from jaxbp.models.llama import init_llama
from jaxbp.models.llama import llama_apply
from jaxbp.models.llama import llama_head

MANUAL, AUTODIFF = "manual", "jax.grad"
CONFIG = Llama(layers=2, width=128, heads=4, kv_heads=2, mlp_width=384)
VOCAB = 13  # the tasks' vocabulary (jaxbp.train.tasks.VOCAB)
Implementation = Literal["cudnn", "xla"]  # of jax.nn.dot_product_attention
QUICK_S = 10.0  # a step faster than this is timed on its second call


class SdpaOps:
  """``jaxbp.ops.reference`` with ``attention`` replaced by ``jax.nn.dot_product_attention`` of one
  ``implementation`` ("cudnn" or "xla"): the llama step on JAX's own attention, for the GPU columns."""

  def __init__(self, implementation: Implementation):
    self.implementation = implementation

  def __getattr__(self, name: str) -> Any:
    return getattr(ops.reference, name)

  def attention(self, q, k, v, *, causal=False, window=None, softcap=None, segment_ids=None, block_size=None):
    del block_size  # the implementation chooses its own tiling
    if window or softcap is not None or segment_ids is not None:
      raise ValueError("SdpaOps.attention: the long-context step uses causal attention only (no window, "
                       "softcap or segment_ids)")
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=self.implementation)


def namespace(variant: str) -> Any:
  """The op namespace of ``variant``: "manual", "jax.grad", or "sdpa IMPLEMENTATION"."""
  if variant == MANUAL:
    return ops
  if variant == AUTODIFF:
    return ops.reference
  if variant.startswith("sdpa "):
    return SdpaOps(cast(Implementation, variant.split(" ", 1)[1]))
  raise ValueError(f"variant must be {MANUAL!r}, {AUTODIFF!r} or 'sdpa IMPLEMENTATION', got {variant!r}")


def config_at(length: int) -> Llama:
  """``CONFIG`` with attention blocks of min(512, T / 8) (at least 16): 512 from T = 4096 on, and a tiny
  run's T still spans 8 blocks, so that it shows the blocking's saving too."""
  return CONFIG._replace(block_size=min(CONFIG.block_size, max(16, length // 8)))


def step_and_args(variant: str, length: int, dtype: str) -> tuple[Any, tuple]:
  """(the jitted value_and_grad of the mean next-token loss, its arguments) at T = ``length``, batch 1,
  parameters and activations in ``dtype``; random token ids and targets (seed 0), the same for every variant."""
  variant_ops = namespace(variant)
  config = config_at(length)
  params = init_llama(jax.random.key(0), config, VOCAB, VOCAB)
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
  rng = np.random.default_rng(0)
  ids, targets = (jnp.asarray(rng.integers(0, VOCAB, size=(1, length)), jnp.int32) for _ in range(2))

  def loss(params, ids, targets):
    losses, _ = llama_head(params, llama_apply(params, ids, config, ops=variant_ops), targets, config,
                           variant_ops)
    return jnp.mean(losses.astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss)), (params, ids, targets)


def peak_rss_bytes() -> int:
  """This process's peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak if sys.platform == "darwin" else peak * 1024)


def _timed(compiled: Any, args: tuple) -> tuple[float, Any]:
  start = time.perf_counter()
  _, grads = jax.block_until_ready(compiled(*args))
  return time.perf_counter() - start, grads


def main(argv: list[str]) -> int:
  variant, length, dtype, budget, grads_path, out_path = argv
  step, args = step_and_args(variant, int(length), dtype)
  compiled = step.lower(*args).compile()
  result = {"temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes), "ran": False}
  _write(out_path, result)  # what the parent reads if the step outlives its timeout
  if result["temp_bytes"] > int(budget):
    return 0
  step_s, grads = _timed(compiled, args)
  if step_s < QUICK_S:  # the first call also touched every buffer once: time a second where it is cheap
    step_s, grads = _timed(compiled, args)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  arrays: dict[str, Any] = {jax.tree_util.keystr(path): np.asarray(g, np.float32) for path, g in leaves}
  np.savez(grads_path, **arrays)
  _write(out_path, {**result, "ran": True, "step_s": step_s, "peak_rss_bytes": peak_rss_bytes()})
  return 0


def _write(path: str, result: dict) -> None:
  with open(path, "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
