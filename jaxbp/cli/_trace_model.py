"""``jaxbp trace --model NAME [model flags] [--task T] --html page.html``: one training step of a model family.

Prints one row per rule call in the order the backward pass reaches them (its output's shape, the bytes
the rule keeps for its backward and what autodiff of its reference keeps), then the memory of the whole
step on the manual rules against ``jax.grad``; ``--html`` writes the page that steps through it
(``jaxbp.insight.model_step``), with a ``check_vjp`` badge per rule unless ``--no-check``. The model flags
are ``jaxbp train``'s (``--hidden 32``, ``--width 16``); the defaults are the family's own.
"""

import argparse
import sys

RESERVED = {"expression", "inputs", "decimals", "png", "svg", "markdown", "dot", "html", "x64", "model", "task",
            "batch_size", "check"}


def configure(parser):
  from jaxbp import models
  from jaxbp.cli import _flags
  group = parser.add_argument_group("a model's training step (--model)")
  group.add_argument("--model", choices=models.names(), help="trace one training step of this model family")
  group.add_argument("--task", help="the generated task of a sequence model (default: its default task)")
  group.add_argument("--batch-size", type=int, default=2, help="examples in the batch traced (default 2)")
  group.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                     help="run check_vjp for every rule on the page (default on)")
  parser.set_defaults(model_fields=_flags.add_model_flags(group, RESERVED))


def _error(message):
  print(f"jaxbp trace: error: {message}", file=sys.stderr)
  return 2


def run(args):
  from jaxbp.cli import _flags
  from jaxbp.cli.trace import check_outputs
  if args.model is None:
    return _error("give an EXPRESSION to trace, or --model NAME")
  if args.expression is not None or args.inputs:
    return _error(f"--model {args.model} traces the model's own step: drop the expression {args.expression!r}")
  others = [f"--{f}" for f in ("png", "svg", "markdown", "dot") if getattr(args, f)]
  if others:
    return _error(f"{others[0]} is for an expression; --model writes --html only")
  if args.batch_size < 1:
    return _error(f"--batch-size must be at least 1, got {args.batch_size}")
  try:
    check_outputs(args)
    config = _flags.model_from_args(args, args.model, args.model_fields)
  except ValueError as e:
    return _error(e)
  return _trace(args, config)


def _trace(args, config):
  from jaxbp.insight import model_step
  from jaxbp.insight import rule_facts
  from jaxbp.insight import tensor_page
  from jaxbp.insight.tables import render
  try:
    step = model_step.trace_model(args.model, config, task=args.task, batch_size=args.batch_size)
  except ValueError as e:  # TaskError among them
    return _error(e)
  print(f"one training step of {args.model} ({config}) on {step.data}: L = {float(step.trace.output):.4f}\n")
  rows = []
  for node in model_step.rule_calls(step.trace):
    kept = [rule_facts.residual_bytes(f, node.args) for f in rule_facts.pair(node)[:2]]
    rows.append([node.name, node.op, tensor_page.shape_text(node.value)] + [f"{b:,}" if b is not None else "—"
                                                                           for b in kept])
  print(render(["node", "rule", "output", "rule keeps (bytes)", "autodiff keeps (bytes)"], rows), "\n")
  for what, (manual, auto) in step.memory.items():
    print(f"{what}: manual rules {manual:,} bytes, jax.grad {auto:,} bytes")
  if args.html:
    with open(args.html, "w", encoding="utf-8") as f:
      f.write(model_step.model_html(step, check=args.check))
    print(f"wrote {args.html}")
  return 0
