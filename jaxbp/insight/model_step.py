"""One training step of a registered model family, traced rule call by rule call, with its memory.

``trace_model("mlp")`` builds the family's default config (or the one given), one small batch of its data
(the bundled digits for a ``"features"`` family, a generated task for a ``"tokens"`` one), and the loss
``jaxbp.train`` trains (``make_loss_fn``), then traces that loss over the parameters with
``jaxbp.insight.trace``: every ``jaxbp.ops`` call is one node, with its shapes, values and gradients. It
also measures the memory the step keeps alive for its backward, on the manual rules and on ``jax.grad``
of the references: the residuals ``jax.vjp`` holds (bytes) and XLA's temporaries of the compiled
gradient. Nothing here names a model: any family in ``jaxbp.models`` works.

Example::

  step = trace_model("lstm", task="reverse", batch_size=2)
  pathlib.Path("lstm.html").write_text(model_html(step))
"""

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.insight import rule_facts

_LABEL = re.compile(r"L|[sc]\d+")  # names the trace keeps for its own values


class ModelStep(NamedTuple):
  """A traced training step.

  Attributes:
    name: the family's name; ``config``: its config; ``data``: what the batch is (text).
    trace: the ``Trace`` of the loss over the parameters (and the batch).
    memory: {"residuals": (manual bytes, autodiff bytes), "temporaries": (manual, autodiff)}: what
      ``jax.vjp`` of the loss keeps for the backward, and XLA's temporary bytes of the compiled gradient.
  """
  name: str
  config: Any
  data: str
  trace: Any
  memory: dict


def _batch(family, task, batch_size, seed):
  """(inputs, targets[, mask]) of the family's data, its DataSpec and a description."""
  from jaxbp import models
  if family.data == "tokens":
    from jaxbp.train.tasks import DEFAULT_TASK
    from jaxbp.train.tasks import load_task
    data = load_task(task or DEFAULT_TASK, seed=seed, num_train=batch_size, num_test=1)
    return ((data.x_train[:batch_size], data.y_train[:batch_size], data.mask_train[:batch_size]), data.spec,
            data.name)
  if task:
    raise ValueError(f"task: model {family.name!r} trains on features (the digits), not on a task ({task!r})")
  from jaxbp.train.data import load_digits
  x, y = load_digits()
  spec = models.DataSpec("features", (x.shape[1],), int(np.max(y)) + 1)
  return (x[:batch_size], y[:batch_size].astype(np.int32)), spec, f"the digits, {batch_size} examples"


def _names(paths):
  """Identifiers for the parameter leaves (``layers_0_w``), none read as a trace label (s0, L)."""
  out: list[str] = []
  for path in paths:
    name = "_".join(re.sub(r"\W", "", str(getattr(k, "key", getattr(k, "idx", k)))) for k in path) or "param"
    name = name if name[0].isalpha() and not _LABEL.fullmatch(name) else f"p_{name}"
    out.append(name if name not in out else f"{name}_{len(out)}")
  return out


def _loss(family, config, spec, ops, seed):
  """``loss(params, state, batch)`` of ``jaxbp.train`` for this family on ``ops``."""
  from jaxbp import train
  loss_fn = train.make_loss_fn(train.TrainConfig(model=config, loss=family.losses[0]), spec, ops=ops)
  key = jax.random.key(seed + 1)
  return lambda params, state, batch: loss_fn(params, state, batch, key)[0]


def trace_model(name: str, config: Any = None, *, task: str | None = None, batch_size: int = 4,
                seed: int = 0) -> ModelStep:
  """Traces one training step of family ``name`` (``config`` default: the family's defaults).

  Raises:
    ValueError: an unknown family (``name``), a task for a features family, or a batch_size below 1.
  """
  from jaxbp import models
  from jaxbp.insight.trace import trace
  import jaxbp.ops
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
  family = models.get(name)
  config = family.config() if config is None else config
  batch, spec, described = _batch(family, task, batch_size, seed)
  params, state = jax.jit(family.init, static_argnums=(1, 2))(jax.random.key(seed), config, spec)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = _names([p for p, _ in leaves])
  batch = tuple(jnp.asarray(b) for b in batch)
  losses = {kind: _loss(family, config, spec, ops, seed) for kind, ops in
            (("manual", jaxbp.ops), ("autodiff", jaxbp.ops.reference))}
  of_leaves = lambda kind: lambda *ws: losses[kind](jax.tree.unflatten(treedef, ws), state, batch)
  t = trace(lambda **named: of_leaves("manual")(*named.values()), **dict(zip(names, (w for _, w in leaves))))
  ws = tuple(w for _, w in leaves)
  memory = {"residuals": tuple(rule_facts.residual_bytes(of_leaves(k), ws) for k in losses),
            "temporaries": tuple(_temp_bytes(of_leaves(k), ws) for k in losses)}
  return ModelStep(name, config, described, t, memory)


def _temp_bytes(f, ws):
  from jaxbp.insight.cost import compiled_cost
  return compiled_cost(jax.grad(f, argnums=tuple(range(len(ws)))), *ws).temp_bytes


def rule_calls(trace) -> list:
  """The nodes that call a rule (or loop, a ``scan``), in the order the backward pass reaches them."""
  return [n for n in reversed(trace.nodes) if n.upstream is not None and (n.manual or n.op == "scan")]


def model_html(step: ModelStep, decimals: int = 4, check: bool = True) -> str:
  """The page of a traced step: one step per rule call, in the order the backward reaches them, ending
  with the memory the step keeps for its backward on the manual rules against ``jax.grad``'s."""
  from jaxbp.insight import tensor_page
  rows = [("kept for the backward (residuals of jax.vjp)",) + step.memory["residuals"],
          ("XLA temporaries of the compiled gradient",) + step.memory["temporaries"]]
  chart = ("<h3>Memory of the step: the manual rules against jax.grad of the references</h3>"
           + memory_chart(rows))
  title = f"the loss of {step.name} on {step.data}, one training step"
  return tensor_page.to_html(step.trace, title, decimals, check, nodes=rule_calls(step.trace), end=chart)


def memory_chart(rows) -> str:
  """A horizontal bar chart (inline SVG) of (label, manual bytes, autodiff bytes) rows; None bars are left out."""
  top = max((b for _, *bs in rows for b in bs if b), default=1)
  bars, y = [], 0
  for label, *values in rows:
    bars.append(f'<text x="0" y="{y + 14}" class="mem-label">{label}</text>')
    y += 20
    for who, b, color in zip(("manual rules", "jax.grad"), values, ("#1f618d", "#c0392b")):
      width = 0 if b is None else max(1, 420 * b / top)
      shown = "—" if b is None else f"{b:,} bytes"
      bars.append(f'<rect x="110" y="{y}" width="{width:.1f}" height="16" fill="{color}"/>'
                  f'<text x="0" y="{y + 13}">{who}</text>'
                  f'<text x="{116 + width:.1f}" y="{y + 13}" class="mem-bytes">{shown}</text>')
      y += 20
    y += 8
  return (f'<svg xmlns="http://www.w3.org/2000/svg" class="memory" width="680" height="{y}" '
          f'viewBox="0 0 680 {y}" style="max-width:100%;height:auto;font-size:13px">{"".join(bars)}</svg>')
