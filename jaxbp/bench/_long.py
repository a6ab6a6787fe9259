"""Long context: where the manual rules train and ``jax.grad`` cannot (``jaxbp bench --long-context``).

The ``llama`` family (2 layers, width 128, 4 heads, 2 kv heads, SwiGLU width 384, vocabulary 13, batch 1)
at T = 2048 .. 65536: one training step, ``jax.value_and_grad`` of the mean next-token loss, on the manual
rules (``jaxbp.ops``) and on ``jax.grad`` of the references (``jaxbp.ops.reference``). For every T:

- each step is compiled in a fresh subprocess (``_long_child``), and XLA's ``memory_analysis()`` gives its
  temporary memory (deterministic: the same on every run of one jaxlib);
- a step whose compiled memory fits in half the machine's memory (``memory_budget``: half the RAM on a
  CPU, half the device's memory on a GPU) is then run by that subprocess, so that the peak resident memory
  (the child's ``ru_maxrss``) is the peak of that T alone: one step timed (a quick one on its second call),
  the gradients saved; what does not fit is never run;
- where both ran, their gradients are compared: the largest |manual − autodiff| over the largest
  |autodiff|, per parameter, worst over the parameters (``TOLERANCE`` by dtype).

A variant that timed out at one T is not run at larger T. The largest T each ran at, and their ratio, end
the report. On a GPU the steps run in bfloat16 (``step_dtype``) and two more columns appear where
``jax.nn.dot_product_attention`` has the implementation: the llama step on the references with that
function's ``"cudnn"`` or ``"xla"`` attention (``sdpa_columns`` says which and why not).
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.bench import _long_child as child
from jaxbp.insight import tables

MANUAL, AUTODIFF = child.MANUAL, child.AUTODIFF
LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536)
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}  # gradient agreement, relative to the largest entry
ROW_KEYS = ("T", "manual_temp_bytes", "autodiff_temp_bytes", "manual_ran", "autodiff_ran", "manual_step_s",
            "autodiff_step_s", "manual_peak_rss_bytes")


def ram_bytes() -> int:
  """The machine's physical memory in bytes (``sysconf``)."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget(backend: str, device_bytes: int | None = None) -> tuple[int, str]:
  """(bytes a step may need to be run, what they are half of): half the RAM on a CPU, half the device's
  memory on an accelerator (``device_bytes``, from ``memory_stats()``; the RAM where it reports none)."""
  if backend != "cpu" and device_bytes:
    return device_bytes // 2, f"half the {backend} device's {device_bytes / 2**30:.1f} GiB"
  return ram_bytes() // 2, f"half the machine's {ram_bytes() / 2**30:.1f} GiB of RAM"


def _device_bytes() -> int | None:
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  return (stats or {}).get("bytes_limit")


def step_dtype(backend: str) -> str:
  """bfloat16 on an accelerator (its tensor cores' type), float32 on a CPU (no bf16 arithmetic there)."""
  return "float32" if backend == "cpu" else "bfloat16"


def sdpa_columns(backend: str, probe=None) -> tuple[list[str], list[str]]:
  """(the ``jax.nn.dot_product_attention`` implementations measured as extra columns, notes on the rest).

  None on a CPU: cuDNN needs an NVIDIA GPU, and the ``"xla"`` implementation is there the same T×T
  computation as ``jax.grad`` of the reference, the autodiff column. On a GPU, each of ``"cudnn"`` and
  ``"xla"`` that ``probe(implementation)`` (default: compiling a small causal grouped-query call) accepts.
  """
  if backend == "cpu":
    return [], ["jax.nn.dot_product_attention columns skipped on cpu: 'cudnn' needs an NVIDIA GPU, and 'xla'"
                " on a CPU is the autodiff column's T×T attention again"]
  probe = probe or _compiles
  chosen: list[str] = []
  notes: list[str] = []
  implementations: tuple[child.Implementation, ...] = ("cudnn", "xla")
  for implementation in implementations:
    reason = probe(implementation)
    if reason is True:
      chosen.append(implementation)
    else:
      notes.append(f"jax.nn.dot_product_attention(implementation={implementation!r}) not measured: {reason}")
  return chosen, notes


def _compiles(implementation: child.Implementation) -> bool | str:
  """True if a small bfloat16 causal grouped-query ``dot_product_attention`` compiles, else why not."""
  x = jax.ShapeDtypeStruct((1, 128, 4, 32), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((1, 128, 2, 32), jnp.bfloat16)
  f = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
  try:
    jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2))) \
        .lower(x, kv, kv).compile()
  except Exception as e:  # noqa: BLE001 -- any failure means "not available here", said in the report
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
  return True


def run_step(variant: str, length: int, dtype: str, budget: int, grads_path: str, timeout_s: float) -> dict:
  """Compiles one step of ``variant`` in a fresh subprocess and runs it there if its compiled temporary
  memory is at most ``budget`` bytes (0: compile only): ``{"temp_bytes", "ran", "step_s",
  "peak_rss_bytes"}`` (gradients saved to ``grads_path``), with ``"error"`` when it failed or outlived
  ``timeout_s`` (``temp_bytes`` is then None if it was not compiled yet)."""
  with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
    argv = [sys.executable, "-m", "jaxbp.bench._long_child", variant, str(length), dtype, str(budget),
            grads_path, out.name]
    try:
      done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
      error = None if done.returncode == 0 else \
          f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:200]}"
    except subprocess.TimeoutExpired:
      error = f"timed out after {timeout_s:g} s"
    text = out.read()
  result = {"temp_bytes": None, "ran": False} | (json.loads(text) if text else {})
  if error:
    result.update(ran=False, error=error)
  return result


def grad_rel_error(path_a: str, path_b: str) -> float:
  """The worst over parameters of max|a − b| / max|b| for the gradients saved at the two paths."""
  with np.load(path_a) as a, np.load(path_b) as b:
    return max(float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-30)) for k in b.files)


def lengths_up_to(max_length: int) -> list[int]:
  """The T of the rows: doublings from 2048 (from max_length / 2 when that is smaller, at least 16) up to
  ``max_length``: ``LENGTHS`` for 65536; 128, 256 for a tiny run up to 256."""
  if max_length < 16:
    raise ValueError(f"max_length must be >= 16, got {max_length}")
  first = min(LENGTHS[0], max(16, max_length // 2))
  return [first * 2 ** k for k in range(int(math.log2(max_length // first)) + 1)]


def _run_variant(variant: str, length: int, state: dict, workdir: str) -> dict:
  """One variant at one T: compiled, and run if its memory fits and it has not failed before; else why not."""
  stopped = state["stopped"].get(variant)
  got = run_step(variant, length, state["dtype"], 0 if stopped else state["budget"],
                 os.path.join(workdir, f"{variant}.npz"), state["timeout_s"])
  out = {"temp_bytes": got["temp_bytes"], "ran": got["ran"], "step_s": got.get("step_s"),
         "peak_rss_bytes": got.get("peak_rss_bytes")}
  if "error" in got:
    out["why_not"] = f"failed: {got['error']}"
    state["stopped"][variant] = got["error"]
  elif stopped:
    out["why_not"] = f"not run: {stopped} at a smaller T"
  elif not got["ran"]:
    out["why_not"] = f"not run: compiled {got['temp_bytes'] / 2**30:.1f} GiB > {state['budget_note']}"
  return out


def measure_length(length: int, variants: list[str], state: dict) -> dict:
  """The row of one T: every variant compiled, those that fit run, gradients compared where both ran."""
  with tempfile.TemporaryDirectory() as workdir:
    got = {v: _run_variant(v, length, state, workdir) for v in variants}
    error = (grad_rel_error(os.path.join(workdir, f"{MANUAL}.npz"), os.path.join(workdir, f"{AUTODIFF}.npz"))
             if got[MANUAL]["ran"] and got[AUTODIFF]["ran"] else None)
  row: dict[str, Any] = {"T": length}
  for prefix, variant in (("manual", MANUAL), ("autodiff", AUTODIFF)):
    for key in ("temp_bytes", "ran", "step_s", "peak_rss_bytes"):
      row[f"{prefix}_{key}"] = got[variant][key]
  row["grad_rel_error"] = error
  row["grads_agree"] = None if error is None else error <= TOLERANCE[state["dtype"]]
  row["sdpa"] = {v.split(" ", 1)[1]: got[v] for v in variants if v.startswith("sdpa ")}
  row["notes"] = [f"{v}: {g['why_not']}" for v, g in got.items() if "why_not" in g]
  return row


def growth_exponent(lengths: list[int], values: list[float]) -> float | None:
  """The least-squares slope of log(value) against log(T): 1 for memory linear in T, 2 for quadratic."""
  pairs = [(math.log(t), math.log(v)) for t, v in zip(lengths, values) if v]
  if len(pairs) < 2:
    return None
  x, y = np.array(pairs).T
  return float(np.polyfit(x, y, 1)[0])


def measure(*, max_length: int = LENGTHS[-1], timeout_s: float = 900.0, say=None) -> dict:
  """The long-context section: one row per T of ``lengths_up_to(max_length)``, the largest T each variant
  ran at and the growth exponents; ``say(line)`` hears of each T as it is done (a full run takes minutes)."""
  backend = jax.default_backend()
  budget, budget_note = memory_budget(backend, _device_bytes())
  extra, notes = sdpa_columns(backend)
  state = {"dtype": step_dtype(backend), "budget": budget, "budget_note": budget_note, "timeout_s": timeout_s,
           "stopped": {}}
  variants = [MANUAL, AUTODIFF] + [f"sdpa {name}" for name in extra]
  started, load = time.strftime("%Y-%m-%d %H:%M:%S %Z"), _load()
  rows = []
  for length in lengths_up_to(max_length):
    rows.append(measure_length(length, variants, state))
    if say:
      say(f"long context: T {length} done ({_row_line(rows[-1])})")
  largest = {name: max((r["T"] for r in rows if r[f"{name}_ran"]), default=None) for name in ("manual", "autodiff")}
  ts = [r["T"] for r in rows]
  return {"ram_bytes": ram_bytes(), "budget_bytes": budget, "budget": budget_note, "backend": backend,
          "dtype": state["dtype"], "config": CONFIG_TEXT, "timeout_s": timeout_s, "started": started,
          "load_average_start": load, "load_average_end": _load(), "notes": notes,
          "max_T_manual": largest["manual"], "max_T_autodiff": largest["autodiff"],
          "growth_exponents": {
              "manual_temp": growth_exponent(ts, [r["manual_temp_bytes"] for r in rows]),
              "autodiff_temp": growth_exponent(ts, [r["autodiff_temp_bytes"] for r in rows]),
              "manual_peak_rss": growth_exponent([r["T"] for r in rows if r["manual_ran"]],
                                                 [r["manual_peak_rss_bytes"] for r in rows if r["manual_ran"]])},
          "rows": rows}


CONFIG_TEXT = (f"llama: {child.CONFIG.layers} layers, width {child.CONFIG.width}, {child.CONFIG.heads} heads, "
               f"{child.CONFIG.kv_heads} kv heads, SwiGLU width {child.CONFIG.mlp_width}, vocabulary {child.VOCAB},"
               f" batch 1, causal, attention blocks of min({child.CONFIG.block_size}, T/8)")


def _load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _gib(n: float | None) -> str:
  return "–" if n is None else f"{n / 2**30:.3f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _secs(s: float | None) -> str:
  return "–" if s is None else f"{s:.2f}"


def _ratio(a: int | None, b: int | None) -> str:
  """a / b, or – where a variant never compiled (it failed or timed out first)."""
  return "–" if a is None or b is None else f"{a / max(b, 1):.4f}"


def _row_line(r: dict) -> str:
  return (f"temp {_gib(r['manual_temp_bytes'])} vs {_gib(r['autodiff_temp_bytes'])}; step "
          f"{_secs(r['manual_step_s'])} s vs {_secs(r['autodiff_step_s'])} s")


def render(section: dict) -> str:
  """The section as Markdown: the table, the notes, the exponents, and the largest T each trained at."""
  sdpa = sorted({name for r in section["rows"] for name in r["sdpa"]})
  headers = ["T", "manual temp", "jax.grad temp", "memory ratio", "manual step s", "jax.grad step s",
             "manual peak RSS", "grad rel. error"] + [f"sdpa {n} temp / step s" for n in sdpa]
  body = [[r["T"], _gib(r["manual_temp_bytes"]), _gib(r["autodiff_temp_bytes"]),
           _ratio(r["manual_temp_bytes"], r["autodiff_temp_bytes"]), _secs(r["manual_step_s"]),
           _secs(r["autodiff_step_s"]), _gib(r["manual_peak_rss_bytes"]),
           "–" if r["grad_rel_error"] is None else f"{r['grad_rel_error']:.1e}"]
          + [f"{_gib(r['sdpa'][n]['temp_bytes'])} / {_secs(r['sdpa'][n]['step_s'])}" for n in sdpa]
          for r in section["rows"]]
  e = section["growth_exponents"]
  fmt = lambda x: "–" if x is None else f"{x:.2f}"
  lines = [f"## Long context: {section['config']}, {section['dtype']} on {section['backend']}", "",
           f"Run where the compiled step fits in {section['budget']} ({_gib(section['budget_bytes'])}); load"
           f" average (1/5/15 min) {section['load_average_start']} at the start,"
           f" {section['load_average_end']} at the end ({section['started']}).", "",
           tables.render(headers, body, markdown=True), ""]
  lines += [f"- T {r['T']}: {note}" for r in section["rows"] for note in r["notes"]]
  lines += [f"- {note}" for note in section["notes"]]
  lines += ["", f"Memory grows as T^k: compiled temporary memory k = {fmt(e['manual_temp'])} (manual), "
            f"{fmt(e['autodiff_temp'])} (jax.grad); manual peak RSS k = {fmt(e['manual_peak_rss'])}.", "",
            _verdict(section)]
  return "\n".join(lines) + "\n"


def _verdict(section: dict) -> str:
  manual, autodiff = section["max_T_manual"], section["max_T_autodiff"]
  ratio = f"{manual / autodiff:g}×" if manual and autodiff else "– (one of them ran at no T)"
  return (f"**Largest T trained at: manual {manual or '–'}, jax.grad {autodiff or '–'}; ratio {ratio}.**")
