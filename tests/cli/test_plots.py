"""The pictures of ``jaxbp train`` read through matplotlib's objects: titles, labels, scales, colour bars."""

import numpy as np

from jaxbp import models
from jaxbp import train
from jaxbp.cli import _plots


def _history(epochs, tokens=False, layers=3):
  rng = np.random.default_rng(0)
  records = []
  for e in range(1, epochs + 1):
    r = {"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.5 / e, "test_loss": 1.2 / e,
         "test_accuracy": 1 - 0.4 / e, "layer_grad_norms": list(rng.uniform(0.1, 2.0, layers) / e)}
    if tokens:
      r.update(train_token_accuracy=1 - 0.2 / e, test_token_accuracy=1 - 0.1 / e)
    records.append(r)
  return records


def test_curves_title_names_model_optimiser_data_and_final_accuracy(tmp_path):
  config = train.TrainConfig(model=models.MLP(hidden=(32,), dropout=0.25), optimizer="sgd", lr=0.05)
  history = _history(4)
  title = _plots.curves_title(config, "digits (scikit-learn, bundled)", history)
  assert title.startswith("digits (scikit-learn, bundled): final test accuracy 90.00% after epoch 4")
  assert "mlp(hidden=32," in title and "dropout=0.25" in title and "sgd, lr 0.05 (cosine), batch 64" in title
  fig = _plots.plot_curves(str(tmp_path / "c.png"), history, title=title, dropout=0.25)
  assert fig._suptitle.get_text() == title  # pylint: disable=protected-access
  labels = [t.get_text() for t in fig.legends[0].get_texts()]
  assert labels == ["train: mean over the epoch's steps, measured with dropout 0.25 on",
                    "test: after the epoch, dropout off"]
  loss_ax, acc_ax = fig.axes
  assert loss_ax.get_yscale() == "linear" and acc_ax.get_ylabel() == "accuracy"
  assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_log_loss_and_sequence_accuracy(tmp_path):
  history = _history(3, tokens=True)
  config = train.TrainConfig(model=models.get("rnn").config())
  title = _plots.curves_title(config, "task reverse", history)
  assert "86.67% (whole sequence; 96.67% per token)" in title.splitlines()[0]
  fig = _plots.plot_curves(str(tmp_path / "c.png"), history, log_loss=True)
  loss_ax, acc_ax = fig.axes
  assert loss_ax.get_yscale() == "log" and acc_ax.get_yscale() == "linear"
  assert [t.get_text() for t in fig.legends[0].get_texts()] == [
      "train: mean over the epoch's steps", "test: after the epoch", "accuracy of whole sequences",
      "accuracy per answer token"]
  dashed = [line for line in acc_ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
  np.testing.assert_allclose(dashed[1].get_ydata(), [r["test_token_accuracy"] for r in history])


def _colour_bar(fig):
  """The colour bar's axes and its mappable's (norm, colour map)."""
  bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
  assert len(bars) == 1
  return bars[0], fig.axes[0]


def test_grad_flow_one_line_per_epoch_in_a_sequential_map_with_a_colour_bar(tmp_path):
  history = _history(7)
  names = ["['layers'][0]['w']", "['layers'][1]['w']", "['layers'][2]['w']"]
  fig = _plots.plot_grad_flow(str(tmp_path / "g.png"), history, names)
  bar, ax = _colour_bar(fig)
  assert bar.get_ylabel() == "epoch" and ax.get_yscale() == "log"
  lines = ax.get_lines()
  assert len(lines) == 7  # every epoch, not a pick of six
  np.testing.assert_allclose(lines[6].get_ydata(), history[6]["layer_grad_norms"])
  assert [t.get_text() for t in ax.get_xticklabels()] == ["layers.0.w", "layers.1.w", "layers.2.w"]
  # sequential: the colour's lightness grows with the epoch (viridis: dark purple to green)
  lightness = [np.dot(line.get_color()[:3], (0.299, 0.587, 0.114)) for line in lines]
  assert np.all(np.diff(lightness) > 0)


def test_time_grad_flow_by_epoch_with_a_colour_bar(tmp_path):
  norms = {2: [1e-3, 2e-3, 4e-3], 3: [2e-3, 3e-3, 5e-3]}  # a resumed run: epochs 2 and 3 only
  fig = _plots.plot_time_grad_flow(str(tmp_path / "t.png"), norms, "rnn")
  bar, ax = _colour_bar(fig)
  assert bar.get_ylabel() == "epoch" and ax.get_yscale() == "log"
  assert ax.get_title().startswith("rnn: gradient reaching each time step's input")
  assert [tuple(line.get_ydata()) for line in ax.get_lines()] == [tuple(norms[2]), tuple(norms[3])]
  assert [t for t in bar.get_yticks() if 1.5 < t < 3.5] == [2, 3]


def test_layer_names_of_key_paths():
  assert _plots.layer_name("['layers'][0]['w']") == "layers.0.w"
  assert _plots.layer_name("['embed']") == "embed"
