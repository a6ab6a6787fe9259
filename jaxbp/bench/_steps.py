"""Training-step measurements: time, GFLOP/s, % of ceiling, temporary memory, backward/forward FLOPs."""

import functools

import jax.numpy as jnp

from jaxbp import ops as jaxbp_ops
from jaxbp.bench import _models
from jaxbp.bench import _timing
from jaxbp.insight import cost

MANUAL, AUTODIFF, TORCH = "manual", "jax.grad", "torch eager"


def _jax_variants(spec, dtype, donate):
  params, x, labels = _models.make_batch(spec, dtype)
  steps = {MANUAL: _models.make_step(jaxbp_ops, donate),
           AUTODIFF: _models.make_step(jaxbp_ops.reference, donate)}
  executables = {name: step.lower(params, x, labels).compile() for name, step in steps.items()}
  compiled = {name: cost.compiled_cost(None, compiled=exe) for name, exe in executables.items()}
  blocks = {name: _models.jax_block(exe, params, x, labels) for name, exe in executables.items()}
  return (params, x, labels), compiled, blocks


def _flop_split(ops, params, x, labels):
  loss = functools.partial(_models.mlp_loss, ops)
  dropped = cost.backprop_cost(loss, params, x, labels)
  counted = cost.backprop_cost(loss, params, x, labels, wrt_input=True)
  return {"forward_flops": dropped.forward_flops, "backward_flops": dropped.backward_flops,
          "ratio": dropped.ratio, "ratio_with_input_grad": counted.ratio}


def measure_model(spec, *, dtype, ceiling, rounds, target_s, torch_device, donate):
  """Times the step of ``spec`` three ways and gathers its FLOP and memory accounting.

  ``torch_device`` ("cpu", "cuda" or None for no PyTorch column) is used for float32 steps only.

  Returns:
    A dict with ``variants`` (per variant: ms, GFLOP/s from XLA and from 6·P·D, % of ceiling, temp
    bytes), ``ratios`` (medians of paired ratios), and ``flops`` (XLA's forward/backward split).
  """
  (params, x, labels), compiled, blocks = _jax_variants(spec, dtype, donate)
  if torch_device is not None and dtype == jnp.float32:
    blocks[TORCH] = _models.torch_block(spec, device=torch_device)
  shared = _timing.calibrate(blocks[MANUAL], target_s)  # the same number of steps per block for all
  timings = _timing.interleave(blocks, rounds, dict.fromkeys(blocks, shared))
  six_pd = cost.six_pd(params, spec.batch)
  variants = {}
  for name, t in timings.items():
    xla_flops = compiled.get(name, compiled[AUTODIFF]).flops  # torch: the same math, counted by XLA
    variants[name] = {
        "ms": t.median * 1e3, "best_ms": t.best * 1e3, "rounds_ms": [s * 1e3 for s in t.rounds],
        "xla_flops": xla_flops, "gflops_xla": xla_flops / t.median / 1e9,
        "gflops_6pd": six_pd / t.median / 1e9,
        "temp_bytes": compiled[name].temp_bytes if name in compiled else None}
    for key in ("xla", "6pd"):
      variants[name][f"pct_ceiling_{key}"] = 100 * variants[name][f"gflops_{key}"] / ceiling
  ratios = {f"{MANUAL} / {other}": _timing.paired_ratio(timings[MANUAL], timings[other])
            for other in timings if other != MANUAL}
  flops = {MANUAL: _flop_split(jaxbp_ops, params, x, labels),
           AUTODIFF: _flop_split(jaxbp_ops.reference, params, x, labels)}
  label = spec.label + ("" if dtype == jnp.float32 else f" ({jnp.dtype(dtype).name})")
  return {"model": label, "sizes": list(spec.sizes), "batch": spec.batch,
          "dtype": jnp.dtype(dtype).name, "params": cost.param_count(params), "six_pd": six_pd,
          "reps": shared, "variants": variants, "ratios": ratios, "flops": flops}


def _bound(bounds, seconds):
  """The lower bound that explains at least half the measured time, else "kernel efficiency"."""
  name = max(bounds, key=bounds.get)
  return name if bounds[name] >= 0.5 * seconds else "kernel efficiency"


def measure_scale(widths, batches, *, depth, d_in, classes, ceiling, bandwidth, floor, rounds, target_s):
  """Step time of ``d_in``-w-...-w-``classes`` MLPs over a grid of widths and batch sizes.

  Each cell names what bounds it: the largest of three lower bounds on the step time, XLA's FLOPs at
  the GEMM ceiling ("arithmetic"), XLA's bytes accessed at the measured streaming-read bandwidth
  ("memory"), and the cost of dispatching an empty jitted call ("dispatch"), provided it accounts for
  at least half the measured time; otherwise "kernel efficiency": launch overhead of many small
  kernels, or skinny GEMMs that run far below peak without saturating memory either.
  """
  rows = []
  for width in widths:
    for batch in batches:
      spec = _models.ModelSpec("scale", (d_in,) + (width,) * depth + (classes,), batch)
      _, compiled, blocks = _jax_variants(spec, jnp.float32, False)
      reps = _timing.calibrate(blocks[MANUAL], target_s)
      timings = _timing.interleave(blocks, rounds, dict.fromkeys(blocks, reps))
      manual = compiled[MANUAL]
      bounds = {"arithmetic": manual.flops / (ceiling * 1e9),
                "memory": manual.bytes_accessed / (bandwidth * 1e9), "dispatch": floor}
      t = timings[MANUAL].median
      rows.append({"width": width, "batch": batch, "ms": t * 1e3,
                   "ratio_vs_autodiff": _timing.paired_ratio(timings[MANUAL], timings[AUTODIFF]),
                   "gflops_xla": manual.flops / t / 1e9,
                   "pct_ceiling": 100 * manual.flops / t / 1e9 / ceiling,
                   "flops_per_byte": manual.flops / max(manual.bytes_accessed, 1.0),
                   "bound": _bound(bounds, t),
                   "bound_ms": {k: v * 1e3 for k, v in bounds.items()}})
  return rows
