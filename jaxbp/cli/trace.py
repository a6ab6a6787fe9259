"""Trace the backward pass of an expression node by node, as note 001 does by hand.

Example (note 001's circuit):

  jaxbp trace "sigmoid(w0*x0 + w1*x1 + w2)" w0=2 x0=-1 w1=-3 x1=-2 w2=-3 --png circuit.png

prints one row per node and input: the forward value z, the upstream gradient ∂L/∂z, the local
gradient ∂z/∂x and the downstream gradient ∂L/∂x; then every input's gradient from the trace, from
jax.grad, and from jax.grad of the same expression on the plain-jnp references. The expression
language: + - * / (also × ÷ −), ** or ^, parentheses, numbers, named inputs, and the functions
sigmoid tanh relu leaky_relu elu max exp log sqrt.
"""

HELP = "trace the backprop of an expression node by node: table, Markdown, PNG/SVG graph"


def configure(parser):
  parser.add_argument("expression", help='e.g. "sigmoid(w0*x0 + w1*x1 + w2)"')
  parser.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help="a value for every input")
  parser.add_argument("--decimals", type=int, default=2,
                      help="decimals printed (default 2, as the notes' figures)")
  parser.add_argument("--png", metavar="FILE", help="draw the graph to a PNG file")
  parser.add_argument("--svg", metavar="FILE", help="draw the graph to an SVG file")
  parser.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
  parser.add_argument("--x64", action="store_true", help="compute in float64")


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


def run(args):
  import importlib.util
  import sys

  from jaxbp.insight.expr import ExprError
  from jaxbp.insight.expr import parse

  if (args.png or args.svg) and importlib.util.find_spec("matplotlib") is None:
    print("jaxbp trace: error: --png/--svg draw with matplotlib, which is not installed: "
          'pip install "jaxbp[train]" (or pip install matplotlib)', file=sys.stderr)
    return 2

  try:
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
  agree = all(np.allclose(t.grads[n], ref[n], rtol=1e-4, atol=1e-6) for n in t.grads)
  print("\n" + ("the trace, jax.grad and the references agree" if agree else
                "WARNING: the trace's gradients differ from jax.grad of the references"))
  for path in (args.png, args.svg):
    if path:
      print(f"wrote {t.draw(path, args.decimals)}")
  if args.markdown:
    with open(args.markdown, "w", encoding="utf-8") as f:
      f.write(f"L = `{expr.source}`\n\n" + tables.trace_table(t, args.decimals, ref, markdown=True))
    print(f"wrote {args.markdown}")
  return 0 if agree else 1
