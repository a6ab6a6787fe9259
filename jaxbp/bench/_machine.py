"""What the machine can do: its matrix-multiply ceiling, memory bandwidth and dispatch floor.

The ceiling is the best of XLA, NumPy and (if installed) PyTorch multiplying square matrices, each
timed in the same interleaved rounds; every step's GFLOP/s is reported as a fraction of it. On a GPU
the bf16 ceiling is measured too, and bf16 steps are judged against it.
"""

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.bench import _timing


def _cpu_model():
  """CPU name and its widest SIMD extension, from /proc/cpuinfo where there is one."""
  name, simd = platform.processor() or platform.machine(), ""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return name, simd
  for line in info.splitlines():
    if line.startswith("model name"):
      name = line.split(":", 1)[1].strip()
    if line.startswith("flags"):
      flags = set(line.split(":", 1)[1].split())
      simd = next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "")
      break
  return name, simd


def load_average():
  """The 1, 5 and 15 minute load averages, or None where the OS does not report them."""
  return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def describe():
  """The machine, in words and numbers, for the report."""
  cpu, simd = _cpu_model()
  device = jax.devices()[0]
  return {
      "cpu": cpu,
      "simd": simd,
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device": getattr(device, "device_kind", str(device)),
      "jax": jax.__version__,
      "numpy": np.__version__,
      "python": platform.python_version(),
      "load_average": load_average(),
      "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  }


def _gemm_blocks(n, dtype, with_torch):
  key = jax.random.PRNGKey(0)
  a = jax.random.normal(key, (n, n), dtype)
  f = jax.jit(jnp.matmul)

  def xla(reps):
    for _ in range(reps):
      out = f(a, a)
    out.block_until_ready()
  blocks = {f"XLA {n}": xla}
  if dtype == jnp.float32 and jax.default_backend() == "cpu":
    an = np.asarray(a)
    blocks[f"NumPy {n}"] = lambda reps: [an @ an for _ in range(reps)]
    if with_torch:
      import torch
      at = torch.from_numpy(an.copy())
      blocks[f"PyTorch {n}"] = lambda reps: [at @ at for _ in range(reps)]
  return blocks


def gemm_ceiling(sizes, dtype, rounds, target_s, with_torch):
  """GFLOP/s of square matmuls of each size in ``sizes``, by library, and the best of them.

  Returns:
    ``{"dtype", "rates": {"XLA 2048": GFLOP/s, ...}, "ceiling": the highest median rate}``.
  """
  blocks, flops = {}, {}
  for n in sizes:
    for name, block in _gemm_blocks(n, dtype, with_torch).items():
      blocks[name], flops[name] = block, 2.0 * n ** 3
  reps = {name: _timing.calibrate(block, target_s) for name, block in blocks.items()}
  timings = _timing.interleave(blocks, rounds, reps)
  rates = {name: flops[name] / t.median / 1e9 for name, t in timings.items()}
  return {"dtype": jnp.dtype(dtype).name, "rates": rates, "ceiling": max(rates.values())}


def memory_bandwidth(n_floats, rounds, target_s):
  """GB/s of a jitted sum over ``n_floats`` float32 values: a streaming read, nothing allocated.

  (A jitted ``2·x`` would measure the allocator too: a fresh output buffer above glibc's mmap
  threshold page-faults on every call.)
  """
  x = jnp.ones((n_floats,), jnp.float32)
  f = jax.jit(jnp.sum)

  def block(reps):
    for _ in range(reps):
      out = f(x)
    out.block_until_ready()
  reps = _timing.calibrate(block, target_s)
  t = _timing.interleave({"read": block}, rounds, {"read": reps})["read"]
  return 4 * n_floats / t.median / 1e9


def dispatch_floor(rounds):
  """Seconds per call of a jitted function that does almost nothing: the fixed cost of one step."""
  params = [jnp.ones((4,)) for _ in range(8)]
  f = jax.jit(lambda p: [q + 1.0 for q in p])

  def block(reps):
    p = params
    for _ in range(reps):
      p = f(p)
    jax.block_until_ready(p)
  reps = _timing.calibrate(block, 0.02)
  return _timing.interleave({"noop": block}, rounds, {"noop": reps})["noop"].median
