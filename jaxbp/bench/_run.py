"""Runs the benchmark's sections in order and gathers one results dict."""

import importlib.util
import json

import jax
import jax.numpy as jnp

from jaxbp import train
from jaxbp.bench import _digits
from jaxbp.bench import _machine
from jaxbp.bench import _models
from jaxbp.bench import _steps


def _dtypes(args, backend):
  if args.dtypes:
    return [jnp.dtype(name) for name in args.dtypes.split(",")]
  return [jnp.dtype(jnp.float32)] + ([jnp.dtype(jnp.bfloat16)] if backend == "gpu" else [])


def _donate(args):
  # "auto" is the training loop's choice (off on CPU, where it measured slower; docs/performance.md).
  return train.default_donate() if args.donate == "auto" else args.donate == "on"


def _ceilings(cfg, dtypes, rounds, with_torch):
  backend = jax.default_backend()
  sizes = cfg["gemm_gpu"] if backend == "gpu" else cfg["gemm_cpu"]
  return [_machine.gemm_ceiling(sizes, dtype, rounds, cfg["target_s"], with_torch and backend == "cpu")
          for dtype in dtypes]


def run_all(args, cfg):
  """Every requested section; the returned dict is what ``--json`` writes."""
  backend = jax.default_backend()
  rounds = args.rounds or cfg["rounds"]
  with_torch, torch_note = (False, "PyTorch skipped (--no-torch)") if args.no_torch else \
      _models.torch_available()
  machine = _machine.describe()
  machine["torch"] = torch_note if with_torch else "not used"
  notes = [] if with_torch else [torch_note]
  torch_device = _models.torch_device() if with_torch else None
  if with_torch and torch_device is None:
    notes.append(f"PyTorch eager left out of the steps: JAX runs on {backend}, torch sees no such device")
  elif with_torch and backend != "cpu":
    notes.append("the digits section runs PyTorch on the CPU")
  dtypes = _dtypes(args, backend)
  donate = _donate(args)
  notes.append(f"parameter donation {'on' if donate else 'off'} for backend {backend} "
               f"(--donate {args.donate})")
  ceilings = _ceilings(cfg, dtypes, rounds, with_torch)
  ceiling_of = {c["dtype"]: c["ceiling"] for c in ceilings}
  config = {"rounds": rounds, "tiny": args.tiny, "donate": donate,
            "order": "every permutation in turn, one settling call before each timed block"}
  results = {"machine": machine, "config": config,
             "ceilings": ceilings, "steps": [], "notes": notes}
  for dtype in dtypes:
    for name in args.models:
      sizes, batch = cfg["models"][name]
      spec = _models.ModelSpec(name, sizes, batch)
      results["steps"].append(_steps.measure_model(
          spec, dtype=dtype, ceiling=ceiling_of[dtype.name], rounds=rounds, target_s=cfg["target_s"],
          torch_device=torch_device, donate=donate))
  if not args.no_digits:
    results["digits"] = _digits_section(cfg, with_torch, notes)
  if args.scale:
    results["scale"] = _scale_section(cfg, ceiling_of["float32"] if "float32" in ceiling_of
                                      else max(ceiling_of.values()))
  machine["load_average_end"] = _machine.load_average()
  return results


def _digits_section(cfg, with_torch, notes):
  if importlib.util.find_spec("sklearn") is None:  # the digits ship inside scikit-learn (train extra)
    notes.append("digits section skipped: scikit-learn not installed (pip install 'jaxbp[train]')")
    return None
  return _digits.measure(target=0.97, max_epochs=cfg["max_epochs"], startup_runs=cfg["startup_runs"],
                         with_torch=with_torch, train_command=cfg["train_command"])


def _scale_section(cfg, ceiling):
  s = cfg["scale"]
  bandwidth = _machine.memory_bandwidth(cfg["bandwidth_floats"], 3, s["target_s"])
  floor = _machine.dispatch_floor(3)
  rows = _steps.measure_scale(s["widths"], s["batches"], depth=2, d_in=s["d_in"], classes=10,
                              ceiling=ceiling, bandwidth=bandwidth, floor=floor,
                              rounds=s["rounds"], target_s=s["target_s"])
  return {"d_in": s["d_in"], "bandwidth_gbs": bandwidth, "dispatch_floor_us": floor * 1e6, "rows": rows}


def write_json(path, results):
  """Writes ``results`` to ``path`` as indented JSON."""
  with open(path, "w") as f:
    json.dump(results, f, indent=1, default=str)
