"""Gradient flow: the plot of per-layer gradient norms of a parameter pytree (notes 001 and 004).

Note 001 says to watch how gradients flow back through a deep network; note 004 names what goes
wrong: with saturating sigmoids the norms shrink layer by layer towards the input (vanishing), with a
bad initialisation they grow (exploding); ReLU with He init, residual connections and batch norm keep
them level. ``jaxbp.train.layer_grad_norms`` measures it (beside the step that records it), and
``plot_grad_norms`` draws one curve per run or step.

``jaxbp train --grad-flow`` records the norms inside its jitted step and writes ``grad_flow.png``.

Example (inside a training loop of your own)::

  grads = jax.grad(loss)(params, x, y)
  history[f"step {step}"] = list(layer_grad_norms(grads).values())
  ...
  plot_grad_norms(history, "grad_flow.png")
"""

from collections.abc import Mapping, Sequence
import os
import pathlib

import numpy as np


def plot_grad_norms(curves: Mapping[str, Sequence[float]], path: str | os.PathLike,
                    title: str = "gradient norm per layer", xlabel: str = "layer (1 = input side)",
                    ylabel: str = "‖∂L/∂W‖") -> pathlib.Path:
  """Draws one line per entry of ``curves`` ({label: [norm of layer 1, 2, ...]}) on a log scale.

  Args:
    curves: label -> per-layer norms (input layer first), e.g. one entry per model or per step; or, for
      a recurrent model, per time step (``jaxbp.models.recurrent.input_grad_norms``, with ``xlabel``).
    path: the file to write; ``.png`` or ``.svg``.
    title: the figure's title.
    xlabel, ylabel: the axes' labels.

  Returns:
    The ``pathlib.Path`` written.
  """
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  path = pathlib.Path(path)
  fig = Figure(figsize=(8, 4.8))
  ax = fig.add_subplot()
  for label, norms in curves.items():
    ax.plot(np.arange(1, len(norms) + 1), np.maximum(np.asarray(norms), 1e-30), marker="o",
            markersize=3, label=label)
  ax.set_yscale("log")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path
