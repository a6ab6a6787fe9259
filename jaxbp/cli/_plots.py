"""The pictures of ``jaxbp train``: loss and accuracy curves, and per-layer gradient norms."""

from typing import Any


def import_matplotlib() -> None:
  """Imports matplotlib's Agg canvas (run in a thread while XLA compiles, so the plot costs no wait later)."""
  import matplotlib.backends.backend_agg  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  import matplotlib.figure  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import


def plot_curves(path: str, history: list) -> None:
  """Loss and accuracy per epoch, train and test, to ``path`` (matplotlib's Agg canvas, no pyplot)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  epochs = [r["epoch"] for r in history]
  fig = Figure(figsize=(9, 3.5), layout="constrained")
  for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
    for split in ("train", "test"):
      ax.plot(epochs, [r[f"{split}_{what}"] for r in history], marker="o", label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ax.legend()
  FigureCanvasAgg(fig).print_png(path)


def plot_grad_flow(path: str, history: list) -> None:
  """Per-layer gradient norms at up to six epochs, first and last included (notes 001 and 004)."""
  from jaxbp.insight.gradflow import plot_grad_norms  # pylint: disable=import-outside-toplevel
  picks = sorted({round(i * (len(history) - 1) / 5) for i in range(6)})
  curves = {f"epoch {history[i]['epoch']}": history[i]["layer_grad_norms"] for i in picks}
  plot_grad_norms(curves, path, title="‖∂L/∂W‖ per layer, epoch means, during training")


def plot_time_grad_flow(path: str, norms: Any, label: str) -> None:
  """A recurrent model's ‖∂L/∂x_t‖ per time step on the held-out set (note 004's vanishing gradient)."""
  from jaxbp.insight.gradflow import plot_grad_norms  # pylint: disable=import-outside-toplevel
  plot_grad_norms({label: norms}, path, title="gradient reaching each time step's input, held-out set",
                  xlabel="time step t (1 = first token)", ylabel="‖∂L/∂x_t‖")
