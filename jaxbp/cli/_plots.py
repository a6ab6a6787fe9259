"""The pictures of ``jaxbp train``: loss and accuracy curves, and gradient norms coloured by epoch.

Every function draws on matplotlib's Agg canvas (no pyplot, no global state), writes ``path`` and returns
the ``Figure``, so that a test can read the title, the scales and the colour bar without looking at pixels.
"""

from collections.abc import Sequence
import textwrap
from typing import Any

import numpy as np

from jaxbp import models
from jaxbp.cli import _flags
from jaxbp.cli.tensorboard import layer_name

_CMAP_RANGE = (0.0, 0.85)  # viridis without its pale yellow end, which vanishes on a white page


def import_matplotlib() -> None:
  """Imports matplotlib's Agg canvas (run in a thread while XLA compiles, so the plot costs no wait later)."""
  import matplotlib.backends.backend_agg  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  import matplotlib.figure  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import


def _save(fig: Any, path: str) -> Any:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  FigureCanvasAgg(fig).print_png(path)
  return fig


def curves_title(config: Any, data_name: str, history: list) -> str:
  """The title of ``curves.png``: the model with every field, the optimiser, the data, the final accuracy."""
  fields = ", ".join(f"{k}={_flags.show(v)}" for k, v in config.model._asdict().items())
  model = f"{models.family_of(config.model).name}({fields})"
  last = history[-1]
  final = f"final test accuracy {last['test_accuracy']:.2%}"
  if "test_token_accuracy" in last:
    final += f" (whole sequence; {last['test_token_accuracy']:.2%} per token)"
  optimiser = f"{config.optimizer}, lr {config.lr:g} ({config.schedule}), batch {config.batch_size}"
  return "\n".join([f"{data_name}: {final} after epoch {last['epoch']}", textwrap.fill(model, 150), optimiser])


def _split_labels(dropout: float) -> tuple[str, str]:
  """What the train and test points are: the train ones are running means over the epoch's steps."""
  if dropout > 0:
    return (f"train: mean over the epoch's steps, measured with dropout {dropout:g} on",
            "test: after the epoch, dropout off")
  return "train: mean over the epoch's steps", "test: after the epoch"


def plot_curves(path: str, history: list, *, title: str = "", dropout: float = 0.0, log_loss: bool = False) -> Any:
  """Loss and accuracy per epoch, train and test, to ``path``; per-token accuracy dashed where recorded.

  Args:
    path: the PNG to write.
    history: ``fit``'s records, one per epoch.
    title: the figure's title (:func:`curves_title`).
    dropout: the model's dropout rate, to say that the train points were measured with it.
    log_loss: draw the loss on a log scale (it falls over decades once the fit is good).
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
  epochs = [r["epoch"] for r in history]
  tokens = "train_token_accuracy" in history[0]
  fig = Figure(figsize=(10, 4.6), layout="constrained")
  loss_ax, acc_ax = fig.subplots(1, 2)
  for split, label, colour in zip(("train", "test"), _split_labels(dropout), ("C0", "C1")):
    loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", ms=4, color=colour, label=label)
    acc_ax.plot(epochs, [r[f"{split}_accuracy"] for r in history], marker="o", ms=4, color=colour)
    if tokens:
      acc_ax.plot(epochs, [r[f"{split}_token_accuracy"] for r in history], ls="--", marker=".", color=colour)
  loss_ax.set_ylabel("loss (log scale)" if log_loss else "loss")
  if log_loss:
    _plain_log_labels(loss_ax)
  acc_ax.set_ylabel("accuracy")
  for ax in (loss_ax, acc_ax):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
  if tokens:  # line styles, in grey: the colours are the splits'
    acc_ax.plot([], [], color="grey", marker="o", ms=4, label="accuracy of whole sequences")
    acc_ax.plot([], [], color="grey", ls="--", marker=".", label="accuracy per answer token")
  fig.legend(loc="outside lower center", ncols=2, frameon=False)
  if title:
    fig.suptitle(title, fontsize=9.5)
  return _save(fig, path)


def _plain_log_labels(ax: Any) -> None:
  """A log-scale y axis labelled 0.2, 0.5, 1, 2 rather than 2×10⁻¹ (minor ticks labelled within a decade)."""
  from matplotlib.ticker import LogFormatter  # pylint: disable=import-outside-toplevel

  class Plain(LogFormatter):  # LogFormatter picks which ticks to label; this writes them as %g
    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
      return f"{x:g}"

  ax.set_yscale("log", nonpositive="mask")
  ax.yaxis.set_major_formatter(Plain(labelOnlyBase=False))
  ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def _by_epoch(path: str, curves: dict[int, Sequence[float]], *, title: str, xlabel: str, ylabel: str,
              ticks: Sequence[str] | None = None) -> Any:
  """One line per epoch on a log scale, coloured along a sequential colour map, with an epoch colour bar."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  from matplotlib.cm import ScalarMappable  # pylint: disable=import-outside-toplevel
  from matplotlib.colors import BoundaryNorm  # pylint: disable=import-outside-toplevel
  from matplotlib.colors import ListedColormap  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
  first, last = min(curves), max(curves)
  cmap = ListedColormap(colormaps["viridis"](np.linspace(*_CMAP_RANGE, 256)))
  norm = BoundaryNorm(np.arange(first - 0.5, last + 1.5), cmap.N)
  fig = Figure(figsize=(8, 4.8), layout="constrained")
  ax = fig.add_subplot()
  few = len(curves) <= 12
  for epoch, norms in sorted(curves.items()):
    x = np.arange(1, len(norms) + 1)
    ax.plot(x, np.maximum(np.asarray(norms, dtype=float), 1e-30), color=cmap(norm(epoch)),
            marker="o" if few else None, ms=3, lw=1.5 if few else 1.0)
  _plain_log_labels(ax)
  if ticks is not None:
    ax.set_xticks(np.arange(1, len(ticks) + 1), ticks, rotation=30 if len(ticks) > 4 else 0,
                  ha="right" if len(ticks) > 4 else "center")
  else:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(True, which="both", alpha=0.3)
  bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="epoch")
  bar.locator = MaxNLocator(integer=True)
  bar.update_ticks()
  return _save(fig, path)


def plot_grad_flow(path: str, history: list, names: Sequence[str] | None = None) -> Any:
  """Each weight matrix's ‖∂L/∂W‖ (epoch mean) at every epoch, one line per epoch (notes 001 and 004).

  ``names`` are the matrices' key paths (``jaxbp.train.layer_grad_norms``' keys), the x axis's ticks.
  """
  curves = {r["epoch"]: r["layer_grad_norms"] for r in history if "layer_grad_norms" in r}
  ticks = [layer_name(n) for n in names] if names is not None else None
  return _by_epoch(path, curves, title="‖∂L/∂W‖ per weight matrix, mean over each epoch's steps",
                   xlabel="weight matrix, in parameter order", ylabel="‖∂L/∂W‖", ticks=ticks)


def plot_time_grad_flow(path: str, norms: dict[int, Sequence[float]], label: str) -> Any:
  """A recurrent model's ‖∂L/∂x_t‖ per time step on the held-out set at the end of each epoch (note 004)."""
  return _by_epoch(path, norms, title=f"{label}: gradient reaching each time step's input, held-out set,"
                   " after each epoch", xlabel="time step t (1 = first token)", ylabel="‖∂L/∂x_t‖")


class TimeGradFlow:
  """A recurrent family's ``time_grad_norms`` on the held-out set, called with each epoch's record and state
  by ``jaxbp train``'s observer; jitted once, for :func:`plot_time_grad_flow`. ``norms`` maps epoch -> ``[T]``
  list."""

  def __init__(self, config: Any, data: Any):
    import jax  # pylint: disable=import-outside-toplevel

    from jaxbp import ops  # pylint: disable=import-outside-toplevel
    from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
    family, spec = models.family_of(config.model), train_lib.data_spec(data)
    use = ops.reference if config.autodiff else ops
    norms_fn = family.time_grad_norms
    if norms_fn is None:
      raise ValueError(f"--model {family.name} does not measure its gradient per time step")
    self.label = family.name
    self.batch = (data.x_test, data.y_test, data.mask_test)
    self.norms: dict[int, list[float]] = {}
    self._fn = jax.jit(lambda p, s, b: norms_fn(p, s, b, config.model, spec, use))

  def __call__(self, record: dict, state: Any) -> None:
    self.norms[record["epoch"]] = np.asarray(self._fn(state.params, state.model_state, self.batch)).tolist()
