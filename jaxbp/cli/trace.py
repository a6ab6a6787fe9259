"""Trace the backward pass of an expression node by node, as note 001 does by hand.

Example (note 001's circuit):

  jaxbp trace "sigmoid(w0*x0 + w1*x1 + w2)" w0=2 x0=-1 w1=-3 x1=-2 w2=-3 --png circuit.png

and one training step of a registered model family, rule call by rule call (see jaxbp.cli._trace_model):

  jaxbp trace --model lstm --task reverse --hidden-size 16 --html lstm.html

prints one row per node and input: the forward value z, the upstream gradient ∂L/∂z, the local
gradient ∂z/∂x and the downstream gradient ∂L/∂x; then every input's gradient from the trace, from
jax.grad, and from jax.grad of the same expression on the plain-jnp references. The expression
language: + - * / (also × ÷ −), ** or ^, parentheses, numbers, named inputs, and the functions
sigmoid tanh relu leaky_relu elu max exp log sqrt; at most 100 levels of nesting and 200 numbers,
names and operations. Where the gradients are NaN (log(x - x)) the three columns agree when all are
NaN; at a tie of max(a, b) the rule sends the whole gradient to b (jaxbp.ops.maximum's documented
choice) while jnp.maximum's own derivative splits it: the last column then differs, and it says so.
"""

import os
import re

HELP = "trace the backprop of an expression node by node: table, Markdown, PNG/SVG graph"


def configure(parser):
  # An expression may open with a minus ("-x*2"): argparse takes an argument for a flag when it opens
  # with "-", except what matches its negative-number pattern. Every flag here is "--name" (and -h), so
  # any other argument opening with "-" ("-x", "--x": two unary minuses) is the expression or a value.
  parser._negative_number_matcher = re.compile(r"^-(?!-[A-Za-z]|-$|h$)")  # pylint: disable=protected-access
  parser.add_argument("expression", nargs="?", help='e.g. "sigmoid(w0*x0 + w1*x1 + w2)"')
  parser.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help="a value for every input")
  parser.add_argument("--decimals", type=int, default=2,
                      help="decimals printed (default 2, as the notes' figures)")
  parser.add_argument("--png", metavar="FILE", help="draw the graph to a PNG file")
  parser.add_argument("--svg", metavar="FILE", help="draw the graph to an SVG file")
  parser.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
  parser.add_argument("--dot", metavar="FILE", help="write the graph in Graphviz's DOT language")
  parser.add_argument("--html", metavar="FILE",
                      help="write one self-contained page that steps through the backward pass node by node")
  parser.add_argument("--x64", action="store_true", help="compute in float64")
  from jaxbp.cli import _trace_model
  _trace_model.configure(parser)


def parse_inputs(items):
  """{"w0": 2.0, ...} from ["w0=2", ...]; ValueError naming the item that is not NAME=NUMBER."""
  inputs = {}
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or not name.strip().isidentifier():
      raise ValueError(f"input {item!r} is not NAME=NUMBER (e.g. w0=2)")
    try:
      inputs[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f"input {item!r}: {value!r} is not a number") from None
  return inputs


# The output flags and the suffixes each accepts.
OUTPUTS = {"png": (".png",), "svg": (".svg",), "markdown": (".md", ".markdown"), "html": (".html", ".htm"),
           "dot": (".dot", ".gv")}


def check_outputs(args):
  """ValueError naming the flag whose file cannot be written: wrong suffix, or a folder that is missing."""
  for flag, suffixes in OUTPUTS.items():
    path = getattr(args, flag, None)
    if not path:
      continue
    if not path.lower().endswith(suffixes):
      raise ValueError(f"--{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
      raise ValueError(f"--{flag} {path}: no folder {folder!r} to write into")
    if os.path.isdir(path):
      raise ValueError(f"--{flag} {path}: is a folder, not a file")


def run(args):
  import importlib.util
  import sys

  from jaxbp.insight.expr import ExprError
  from jaxbp.insight.expr import parse

  if args.model is not None or args.expression is None:
    from jaxbp.cli import _trace_model
    return _trace_model.run(args)
  if (args.png or args.svg) and importlib.util.find_spec("matplotlib") is None:
    print("jaxbp trace: error: --png/--svg draw with matplotlib, which is not installed: "
          'pip install "jaxbp[train]" (or pip install matplotlib)', file=sys.stderr)
    return 2

  try:
    check_outputs(args)
    expr = parse(args.expression)
    inputs = parse_inputs(args.inputs)
    expr.check_inputs(inputs)
  except (ExprError, ValueError) as e:
    print(f"jaxbp trace: error: {e}", file=sys.stderr)
    return 2
  return _trace_and_report(expr, inputs, args)


def _trace_and_report(expr, inputs, args):
  import sys

  import jax
  import numpy as np

  if args.x64:
    jax.config.update("jax_enable_x64", True)
  from jaxbp.insight import tables
  from jaxbp.insight.trace import grad_by_name
  from jaxbp.insight.trace import trace
  import jaxbp.ops

  try:
    t = trace(expr.function(jaxbp.ops), **inputs)
  except ValueError as e:  # e.g. an input named like a node label
    print(f"jaxbp trace: error: {e}", file=sys.stderr)
    return 2
  ref = grad_by_name(expr.function(jaxbp.ops.reference), **inputs)
  print(f"L = {expr.source}\n")
  print(tables.trace_table(t, args.decimals, reference=ref))
  close = lambda a, b: bool(np.allclose(a, b, rtol=1e-4, atol=1e-6, equal_nan=True))
  agree = all(close(t.grads[n], ref[n]) for n in t.grads)
  exact = all(close(t.grads[n], t.autodiff[n]) for n in t.grads)
  ties = _ties(t)
  if agree:
    print("\nthe trace, jax.grad and the references agree")
  elif exact and ties:
    print(f"\nthe trace and jax.grad agree; at the tie of max at {', '.join(ties)} the rule sends the whole "
          "gradient to its second argument (jaxbp.ops.maximum's documented choice), while the references' "
          "jnp.maximum splits it half and half: hence the last column")
    agree = True
  else:
    print("\nWARNING: the trace's gradients differ from jax.grad of the references")
  for path in (args.png, args.svg):
    if path:
      print(f"wrote {t.draw(path, args.decimals, expr.source)}")
  if args.dot:
    with open(args.dot, "w", encoding="utf-8") as f:
      f.write(t.to_dot(args.decimals))
    print(f"wrote {args.dot}")
  if args.html:
    with open(args.html, "w", encoding="utf-8") as f:
      f.write(t.to_html(expr.source, args.decimals))
    print(f"wrote {args.html}")
  if args.markdown:
    with open(args.markdown, "w", encoding="utf-8") as f:
      f.write(f"L = `{expr.source}`\n\n" + tables.trace_table(t, args.decimals, ref, markdown=True))
    print(f"wrote {args.markdown}")
  return 0 if agree else 1


def _ties(t):
  """The max nodes whose two inputs are equal: where the rule's documented tie choice applies."""
  import numpy as np
  values = t.values()
  read = lambda name: values[name] if name in values else float(name)  # else: a number written out
  return [node.name for node in t.nodes
          if node.op == "maximum" and bool(np.any(np.equal(read(node.inputs[0]), read(node.inputs[1]))))]
