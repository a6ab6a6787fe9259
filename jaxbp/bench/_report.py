"""The benchmark's results as Markdown tables."""

import importlib

from jaxbp.insight import tables


class Results(dict):
  """Every measurement of one benchmark run (the dict ``--json`` writes): ``str()`` is the Markdown
  report, and a notebook shows the same tables as HTML."""

  def __str__(self) -> str:
    from jaxbp.bench import RULE_SECTIONS
    text = render(self) if "machine" in self else ""
    if "long_context" in self:
      from jaxbp.bench import _long
      text += _long.render(self["long_context"])
    for name, (module_name, _) in RULE_SECTIONS.items():
      if name in self:
        text += "\n\n" + importlib.import_module(module_name).render(self[name])
    return text

  def _repr_html_(self) -> str:
    from jaxbp.insight import display
    return display.markdown_html(str(self))


def _markdown(headers, rows):
  return tables.render(headers, rows, markdown=True)


def _mib(n):
  return "–" if n is None else f"{n / 2**20:.3f} MiB"


def machine(m, ceilings):
  simd = f", {m['simd'].upper()}" if m.get("simd") else ""
  lines = [f"Machine: {m['cpu']} ({m['cpu_count']} cores{simd}), backend {m['backend']} ({m['device']}); "
           f"jax {m['jax']}, numpy {m['numpy']}, torch {m['torch']}, "
           f"Python {m['python']}; {m['time']}.",
           f"Load average (1, 5, 15 min) at start {_load(m.get('load_average'))}, at end "
           f"{_load(m.get('load_average_end'))}.", ""]
  rows = []
  for c in ceilings:
    rows += [[c["dtype"], name, f"{rate:.1f}"] for name, rate in c["rates"].items()]
    rows.append([c["dtype"], "**ceiling (best)**", f"**{c['ceiling']:.1f}**"])
  return "\n".join(lines) + "\n" + _markdown(["dtype", "square GEMM", "GFLOP/s"], rows)


def _load(values):
  return "n/a" if not values else "/".join(f"{v:.2f}" for v in values)


def steps(results):
  rows = []
  for r in results:
    for name, v in r["variants"].items():
      rows.append([r["model"], name,
                   f"{v['ms']:.3f}", f"{v['gflops_xla']:.1f}", f"{v['pct_ceiling_xla']:.0f}%",
                   f"{v['gflops_6pd']:.1f}", f"{v['pct_ceiling_6pd']:.0f}%", _mib(v["temp_bytes"])])
  headers = ["model", "variant", "step ms (median)", "GFLOP/s (XLA count)", "% ceiling (XLA)",
             "GFLOP/s (6·P·D)", "% ceiling (6·P·D)", "temp memory"]
  return _markdown(headers, rows)


def ratios(results):
  rows = []
  for r in results:
    for name, value in r["ratios"].items():
      rows.append([r["model"], name, f"{value:.3f}"])
  return _markdown(["model", "paired ratio (median over rounds)", "value"], rows)


def flop_split(results):
  rows = []
  for r in results:
    for name, f in r["flops"].items():
      rows.append([r["model"], name, f"{f['forward_flops'] / 1e9:.4f}", f"{f['backward_flops'] / 1e9:.4f}",
                   f"{f['ratio']:.3f}", f"{f['ratio_with_input_grad']:.3f}", f"{r['six_pd'] / 1e9:.4f}"])
  headers = ["model", "rules", "forward GFLOP", "backward GFLOP", "bwd/fwd", "bwd/fwd with dX₀",
             "6·P·D GFLOP"]
  return _markdown(headers, rows)


def digits(d):
  rows = []
  for name, r in d["frameworks"].items():
    startup = "–" if r["startup_s"] is None else f"{r['startup_s']:.2f}"
    rows.append([name, startup, f"{r['compile_s']:.2f}", f"{r['train_s']:.2f}",
                 r["epochs"], f"{100 * r['accuracy']:.1f}%" + ("" if r["reached"] else " (not reached)")])
  out = _markdown(["framework", "start-up s", "compile / first step s", f"train to {100 * d['target']:.0f}% s",
                "epochs", "test accuracy"], rows)
  cmd = d.get("jaxbp_train")
  if cmd:
    wall = "n/a" if cmd["wall_s"] is None else f"{cmd['wall_s']:.2f} s"
    acc = cmd.get("test_accuracy")
    acc = "" if acc is None else f", final test accuracy {100 * acc:.1f}%"
    out += (f"\n\n`jaxbp train` with its defaults (whole command, start-up included): {wall}, "
            f"exit {cmd['returncode']}{acc}.")
  return out


def scale(s):
  rows = s["rows"]
  body = [[r["width"], r["batch"], f"{r['ms']:.3f}", f"{r['ratio_vs_autodiff']:.3f}",
           f"{r['gflops_xla']:.1f}",
           f"{r['pct_ceiling']:.0f}%", f"{r['flops_per_byte']:.1f}", r["bound"],
           " / ".join(f"{v:.3f}" for v in r["bound_ms"].values())] for r in rows]
  headers = ["width", "batch", "manual step ms", "manual / jax.grad", "GFLOP/s (XLA)", "% ceiling",
             "FLOP/byte", "bound", "lower bounds ms (arith / mem / dispatch)"]
  return (f"Measured memory bandwidth {s['bandwidth_gbs']:.1f} GB/s (jitted sum, streaming read); "
          f"dispatch floor {s['dispatch_floor_us']:.1f} µs (an empty jitted call).\n\n"
          + _markdown(headers, body))


def render(results):
  """The whole report: every section present in ``results``, as Markdown."""
  parts = ["## Machine and GEMM ceiling", machine(results["machine"], results["ceilings"])]
  if results.get("steps"):
    parts += ["## Training step (SGD included)", steps(results["steps"]),
              "## Paired ratios", ratios(results["steps"]),
              "## Backward / forward FLOPs (XLA cost analysis)", flop_split(results["steps"])]
  if results.get("digits"):
    parts += ["## Digits: time to target accuracy", digits(results["digits"])]
  if results.get("scale"):
    d_in = results["scale"]["d_in"]
    parts += [f"## Scale: {d_in}-w-w-10 MLP, step time vs width and batch", scale(results["scale"])]
  parts += [f"Notes: {note}" for note in results.get("notes", [])]
  return "\n\n".join(parts) + "\n"
