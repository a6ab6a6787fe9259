"""Benchmark: manual rules vs ``jax.grad`` vs PyTorch eager, measured side by side in one process.

Sections (each a Markdown table; ``--json FILE`` writes every number):
  1. the machine's square-GEMM ceiling (float32; bf16 too on a GPU);
  2. the SGD training step of a small (batch 128, 64-256-256-10), a large (batch 512, 784-2048-2048-10)
     and a deep (batch 128, 64-512x8-10) ReLU MLP, three ways, interleaved in rounds: step time, GFLOP/s
     (XLA's count and the notes' 6·P·D), % of the ceiling, compiled temporary memory, and the medians of
     the per-round paired ratios;
  3. backward/forward FLOPs from XLA's cost analysis (note 003 predicts 2);
  4. time to 97% test accuracy on the digits, start-up and compile separately, JAX vs PyTorch;
  5. with ``--scale``: step time vs width (256-4096) and batch (32-2048), and what bounds each cell;
  6. the rules beyond the MLP, one section per entry of ``RULE_SECTIONS`` (``--no-NAME`` skips one):
     the manual rule vs jax.grad of its reference, step time and compiled temporary memory, at a small
     and a realistic size: ``seq`` (embedding, rnn, lstm), ``conv`` (conv2d, max_pool2d, avg_pool2d),
     ``attn`` (attention, fused linear cross-entropy, rms/layer norm, the transformer step; memory growth with T
     and V), ``llm`` (issue 20's table: grouped-query, sliding-window, softcapped, ALiBi and segmented
     attention, the SwiGLU MLP block, RoPE, the cross-entropy options, distillation, the llama step).

``--long-context`` measures instead the llama step on the manual rules against ``jax.grad`` of the references
at T = 2048 .. 65536 (``_long``: compiled memory at every T, each step that fits run in its own process,
the largest T each trains at; ``--long-context-max-T 256`` for a tiny run). Most of an hour on a loaded
2-core CPU, T = 65536 most of it.

``--tiny`` runs everything at toy sizes in seconds (for CI); timings then mean nothing.

Usage: ``jaxbp bench [--tiny] [--scale] [--long-context] [--json FILE]`` or ``python -m jaxbp.bench ...``.
"""

import argparse
import importlib
import sys
from typing import Any

HELP = "measure manual rules vs jax.grad vs PyTorch: step time, FLOPs, memory, digits time-to-97%"

FULL: dict[str, Any] = {
    "models": {"small": ((64, 256, 256, 10), 128), "large": ((784, 2048, 2048, 10), 512),
               "deep": ((64,) + (512,) * 8 + (10,), 128)},
    "gemm_cpu": (2048, 3072), "gemm_gpu": (4096, 8192), "rounds": 12, "target_s": 0.25,
    "bandwidth_floats": 2**25, "max_epochs": 100, "startup_runs": 3, "train_command": True,
    "scale": {"d_in": 784, "widths": (256, 1024, 4096), "batches": (32, 256, 2048), "rounds": 4,
              "target_s": 0.1},
}
TINY: dict[str, Any] = {
    "models": {"small": ((16, 32, 32, 4), 8), "large": ((32, 64, 64, 10), 16),
               "deep": ((16,) + (32,) * 8 + (4,), 8)},
    "gemm_cpu": (64,), "gemm_gpu": (64,), "rounds": 2, "target_s": 0.002,
    "bandwidth_floats": 2**12, "max_epochs": 1, "startup_runs": 0, "train_command": False,
    "scale": {"d_in": 32, "widths": (16,), "batches": (4, 8), "rounds": 2, "target_s": 0.002},
}

# The rules beyond the MLP: name -> (module, what it measures). Each module provides
# measure(tiny, rounds, target_s, *, with_torch) -> rows and render(rows) -> Markdown.
RULE_SECTIONS = {
    "seq": ("jaxbp.bench._seq", "embedding, rnn and lstm"),
    "conv": ("jaxbp.bench._conv", "conv2d, max_pool2d and avg_pool2d"),
    "attn": ("jaxbp.bench._attn", "attention, fused linear cross-entropy, rms/layer norm and transformer"),
    "llm": ("jaxbp.bench._llm", "LLM rulebook (GQA, window, softcap/ALiBi/segments, SwiGLU MLP, RoPE, CE options,"
            " distillation, llama step)"),
}


def _model_names(text):
  """``--models``: comma-separated names from ``FULL["models"]``, checked before any measuring."""
  names = text.split(",")
  unknown = [name for name in names if name not in FULL["models"]]
  if unknown:
    raise argparse.ArgumentTypeError(
        f"unknown model {', '.join(unknown)}; choose from {', '.join(FULL['models'])}")
  return names


def _max_length(text):
  """``--long-context-max-T``: an integer >= 16."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 16:
    raise argparse.ArgumentTypeError(f"must be an integer >= 16, got {text!r}")
  return value


def _positive_seconds(text):
  try:
    value = float(text)
  except ValueError:
    value = 0.0
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
  return value


def configure(parser: argparse.ArgumentParser):
  """Adds the benchmark's options to ``parser``."""
  parser.add_argument("--tiny", action="store_true", help="toy sizes, 2 rounds: proves it runs (CI)")
  parser.add_argument("--scale", action="store_true", help="add the width x batch scale table (minutes)")
  parser.add_argument("--json", metavar="FILE", help="write every measurement to FILE as JSON")
  parser.add_argument("--markdown", metavar="FILE", help="also write the Markdown report to FILE")
  parser.add_argument("--models", type=_model_names, default="small,large,deep",
                      help="comma-separated: small,large,deep")
  parser.add_argument("--rounds", type=int, help="rounds of interleaved timing (default 12; tiny 2)")
  parser.add_argument("--dtypes", help="comma-separated step dtypes (default float32; on GPU also bfloat16)")
  parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
  parser.add_argument("--no-digits", action="store_true", help="skip the digits time-to-97%% section")
  for name, (_, what) in RULE_SECTIONS.items():
    parser.add_argument(f"--no-{name}", action="store_true", help=f"skip the {what} section")
  parser.add_argument("--long-context", action="store_true",
                      help="only the long-context section: the llama step, manual vs jax.grad, T 2048..65536")
  parser.add_argument("--long-context-max-T", type=_max_length, default=65536, metavar="T",
                      help="the largest T of --long-context (default 65536; 256: a run of seconds, for CI)")
  parser.add_argument("--long-context-timeout", type=_positive_seconds, default=900.0, metavar="S",
                      help="seconds one step's process may take before that variant stops (default 900)")
  parser.add_argument("--donate", choices=("auto", "on", "off"), default="auto",
                      help="donate parameter buffers to the step (auto: on for GPU/TPU, off for CPU)")


def _measure(args) -> dict:
  """Every section ``args`` asks for, as one ``_report.Results`` dict (what ``--json`` writes)."""
  # Heavy imports (JAX) only now.
  from jaxbp.bench import _report
  from jaxbp.bench import _run
  if args.long_context:
    from jaxbp.bench import _long
    say = lambda line: print(line, file=sys.stderr, flush=True)
    return _report.Results({"long_context": _long.measure(max_length=args.long_context_max_T,
                                                          timeout_s=args.long_context_timeout, say=say)})
  cfg = TINY if args.tiny else FULL
  results = _report.Results(_run.run_all(args, cfg))
  for name, (module_name, _) in RULE_SECTIONS.items():
    if getattr(args, f"no_{name}"):
      continue
    section = importlib.import_module(module_name)
    results[name] = section.measure(args.tiny, args.rounds or cfg["rounds"], cfg["target_s"],
                                    with_torch=False if args.no_torch else None)
  return results


def measure(argv: list[str] | None = None) -> dict:
  """Runs the benchmark as ``jaxbp bench ARGV`` does, without printing, and returns every measurement.

  ``measure(["--tiny", "--no-torch"])`` takes seconds. The result is the dict ``--json`` writes; a
  notebook shows it as the report's tables, and ``str()`` of it is the Markdown report.
  """
  parser = argparse.ArgumentParser(prog="jaxbp.bench.measure")
  configure(parser)
  return _measure(parser.parse_args([] if argv is None else argv))


def run(args) -> int:
  """Runs the benchmark described by ``args``; prints Markdown; returns the exit status."""
  from jaxbp.bench import _run
  results = _measure(args)
  if args.json:  # first: an hour of measurements is kept even if rendering them fails
    _run.write_json(args.json, results)
  text = str(results)
  print(text)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(text)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxbp.bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  configure(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
