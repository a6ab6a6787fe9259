"""Writes docs/rules.md from the rules themselves: run ``python docs/gen_rules.py > docs/rules.md``.

Every formula on that page lives once, in a rule's docstring (STYLE: no formula in two places); this
script only arranges the docstrings, the registry's fields and the source of each ``_fwd``/``_bwd``.
``tests/test_docs.py`` fails when the committed page differs from what this script prints now.
"""

import inspect
import re
import sys
import textwrap

from jaxbp.ops import DEFAULT_BF16_BOUND
from jaxbp.ops import REGISTRY
from jaxbp.ops import bf16_bound

# The families in reading order: the gates of note 001's table first, the losses and norms last.
FAMILIES = ("gates", "elementwise", "activations", "smooth", "linalg", "losses", "norm", "group_norm", "conv", "pool",
            "embedding", "recurrent", "attention", "rms_norm", "linear_cross_entropy", "distillation", "llm")
SUMMARY = re.compile(r"^(?P<forward>.*?)\s*\((?P<note>Notes? [^)]*?)\.?\)\s*$")
ARG = re.compile(r"^(?P<name>[\w*]+): (?P<text>.*)$")
SECTION = re.compile(r"^(Args|Returns|Raises):$")


def _markdown(text):
  """Docstring prose as Markdown: ``code`` becomes `code`, and outside code Markdown's own characters are escaped."""
  out, last = [], 0
  for match in re.finditer(r"``(.+?)``|`([^`]+)`", text):
    out.append(re.sub(r"([\\*_\[\]])", r"\\\1", text[last:match.start()]))
    out.append(f"`{match.group(1) or match.group(2)}`")
    last = match.end()
  out.append(re.sub(r"([\\*_\[\]])", r"\\\1", text[last:]))
  return "".join(out)


def _sections(doc):
  """Splits a Google-style docstring body into prose paragraphs and its Args/Returns sections."""
  prose, sections, current = [], {}, None
  for line in doc.splitlines():
    head = SECTION.match(line.strip()) if not line.startswith(" ") else None
    if head:
      current = sections.setdefault(head.group(1), [])
    elif current is not None and line.strip():
      current.append(line)
    elif current is None:
      prose.append(line)
  paragraphs = [" ".join(p.split()) for p in "\n".join(prose).split("\n\n") if p.strip()]
  return paragraphs, sections


def _args(lines):
  """``name: text`` entries with their indented continuation lines, as (name, text) pairs."""
  items = []
  for line in textwrap.dedent("\n".join(lines)).splitlines():
    match = ARG.match(line) if not line.startswith(" ") else None
    if match:
      items.append([match.group("name"), match.group("text")])
    elif items:
      items[-1][1] += " " + line.strip()
  return items


def _helpers(module, source, shown):
  """The private jaxbp.ops functions ``source`` calls, and those they call in turn (but ``shown``),
  in the order of the rule's module, so every name the quoted code uses is defined on the page."""
  candidates = {name: obj for name, obj in vars(module).items()  # jitted ones too (jax.jit keeps __wrapped__)
                if name.startswith("_") and inspect.isfunction(inspect.unwrap(obj))
                and inspect.unwrap(obj).__module__.startswith("jaxbp.ops")}
  names, todo = set(), set(re.findall(r"\b(_\w+)\(", source))
  while todo:
    name = todo.pop()
    if name in candidates and name not in names:
      names.add(name)
      todo |= set(re.findall(r"\b(_\w+)\(", inspect.getsource(candidates[name])))
  names -= {f.__name__ for f in shown}
  return [obj for name, obj in candidates.items() if name in names]


def _summary(rule):
  """``(forward formula, note)`` from the first line of a rule's docstring."""
  summary = inspect.getdoc(rule.fn).partition("\n")[0]
  match = SUMMARY.match(summary)
  return (match["forward"], match["note"]) if match else (summary, f"Note {rule.note}")


def _cell(text):
  """``text`` as the content of one Markdown table cell: formatted, with its pipes escaped."""
  return _markdown(text).replace("|", r"\|")


def _rule(rule):
  module = sys.modules[rule.fn.__module__]
  path = module.__name__.replace(".", "/") + ".py"
  forward, note = _summary(rule)
  paragraphs, sections = _sections(inspect.getdoc(rule.fn).partition("\n")[2])
  vjp = getattr(module, "_" + rule.name)
  lines = [
      f"### `{rule.name}`", "",
      f"`{rule.name}{inspect.signature(rule.fn)}` — {_markdown(note)} — code: "
      f"[`{path}`](../{path})", "",
      f"**Forward.** {_markdown(forward)}", "",
  ]
  lines += [_markdown(p) + "\n" for p in paragraphs]
  for section, entries in sections.items():
    if section == "Args":
      lines += ["**Arguments.**", ""]
      lines += [f"- `{name}`: {_markdown(text)}" for name, text in _args(entries)]
    else:
      lines += [f"**{section}.** " + _markdown(" ".join(" ".join(entries).split()))]
    lines.append("")
  fwd, bwd = _unwrap(vjp.fwd), _unwrap(vjp.bwd)
  sources = [inspect.getsource(fwd), inspect.getsource(bwd)]
  sources += [inspect.getsource(f) for f in _helpers(module, sources[0] + sources[1], (fwd, bwd))]
  lines += [f"The residuals and the backward, `{fwd.__name__}` and `{bwd.__name__}`"
            f" (`{fwd.__name__}` returns the output and what the backward needs):", "",
            "```python", "\n\n".join(s.rstrip() for s in sources), "```", ""]
  return lines


def _unwrap(f):
  """A rule's own fwd or bwd (behind ``vjp_rule``'s float32 wrapper, ``__wrapped__``), or the shared function
  behind a ``functools.partial`` that binds its axis."""
  return getattr(inspect.unwrap(f), "func", inspect.unwrap(f))


def _family(name):
  module = sys.modules[f"jaxbp.ops.{name}"]
  rules = [r for r in REGISTRY.values() if r.fn.__module__ == module.__name__]
  path = module.__name__.replace(".", "/") + ".py"
  title, _, rest = inspect.getdoc(module).partition("\n")
  lines = [f"## {_markdown(title)}", "", f"File: [`{path}`](../{path}).", ""]
  lines += [_markdown(p) + "\n" for p in _sections(rest)[0]]
  for rule in rules:
    lines += _rule(rule)
  return lines, rules


def render():
  """The whole page, as the string ``docs/rules.md`` must hold."""
  body, listed = [], []
  for family in FAMILIES:
    lines, rules = _family(family)
    body += lines
    listed += rules
  missing = sorted(set(REGISTRY) - {r.name for r in listed})
  if missing:
    raise SystemExit(f"gen_rules.py: rules in no family of FAMILIES: {missing}")
  head = [
      "<!-- Generated by docs/gen_rules.py from the rules' docstrings and jaxbp.ops.REGISTRY."
      " Do not edit: change the docstring, then run `python docs/gen_rules.py > docs/rules.md`. -->",
      "", "# The rules", "",
      f"Every operation in `jaxbp.ops` ({len(REGISTRY)} rules) with its forward formula, local Jacobian,"
      " VJP (the Jacobian-transpose product ∂L/∂x = Jᵀ·∂L/∂z), the choice it makes at points where it has"
      " no derivative, the note it comes from, and the code of its backward. The text of each rule is its"
      " docstring; `tests/ops/` proves every rule against `jax.grad` of its reference in"
      " `jaxbp.ops.reference` with [`check_vjp`](custom-rule.md).", "",
      "**bfloat16.** Each rule computes in float32 at least and rounds its output and each cotangent once"
      " to its input's dtype. Its *bf16 bound* is the precision contract: with bfloat16 inputs and"
      " cotangent, every cotangent's largest error against the float64 truth (the reference's gradient on"
      " the same inputs upcast) is at most the bound times the truth's largest entry, and no larger than"
      " the error of `jax.grad` of the reference run in bfloat16, on the registry's draws and the hard"
      " cases of `jaxbp/check/hard_cases.py` (cross-entropy at p = 0.999 and 1e-6, attention scores of 30"
      " and more, rows of mean square 1e4, large activations). `tests/check/test_precision.py` holds every"
      " rule to it, `check_vjp` on bfloat16 inputs uses it, `benchmarks/precision.py` prints the table."
      f" A rule without a bound of its own in `jaxbp/ops/_precision.py` is held to {DEFAULT_BF16_BOUND:.1e}.", "",
      "| rule | forward | notes | file | bf16 bound |", "|---|---|---|---|---|",
  ]
  for rule in listed:
    forward, _ = _summary(rule)
    file = rule.fn.__module__.rpartition(".")[2] + ".py"
    cell = _cell(forward)
    head.append(f"| [`{rule.name}`](#{rule.name}) | {cell} | {rule.note} |"
                f" `{file}` | {bf16_bound(rule.name):.1e} |")
  return "\n".join(head + [""] + body).rstrip() + "\n"


if __name__ == "__main__":
  sys.stdout.write(render())
