"""``jaxbp train --tensorboard DIR``: event files read back with TensorBoard's own reader, and its refusals."""

import importlib.util
import json

import numpy as np
import optax
from tensorboard.backend.event_processing import event_accumulator  # the test extra has it: TensorBoard's own reader

from jaxbp import train
from jaxbp.cli import train as cli_train
from jaxbp.train import data
from jaxbp.train import loop


def test_events_hold_every_epochs_scalars_norms_and_histograms(tmp_path, monkeypatch, capsys, jaxbp_cmd):
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 90)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(90, 4)) + y[:, None], y=y)
  figures = []
  real = cli_train.plot_curves
  monkeypatch.setattr(cli_train, "plot_curves", lambda *a, **k: figures.append(real(*a, **k)))
  status, err = jaxbp_cmd("train", "--data", str(tmp_path / "d.npz"), "--hidden", "8",
                      "--batch-size", "16", "--epochs", "2", "--log-loss", "--out", str(tmp_path / "run"),
                      "--tensorboard", str(tmp_path / "tb"))
  assert status == 0, err
  metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert metrics["config"]["grad_flow"] is True  # --tensorboard turned it on
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
  acc.Reload()
  layers = ["layers.0.w", "layers.1.w"]
  scalars = {"loss/train": "train_loss", "loss/test": "test_loss", "accuracy/train": "train_accuracy",
             "accuracy/test": "test_accuracy"}
  expected = [*scalars, "learning_rate", *(f"grad_norm/{n}" for n in layers)]
  assert sorted(acc.Tags()["scalars"]) == sorted(expected)
  assert sorted(acc.Tags()["histograms"]) == sorted(["grad_norm", *(f"weights/{n}" for n in layers)])
  history = metrics["history"]
  for tag, key in scalars.items():
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [1, 2]
    np.testing.assert_allclose([e.value for e in events], [r[key] for r in history], rtol=1e-6)
  for i, name in enumerate(layers):
    values = [e.value for e in acc.Scalars(f"grad_norm/{name}")]
    np.testing.assert_allclose(values, [r["layer_grad_norms"][i] for r in history], rtol=1e-6)
  steps = len(data.load_dataset(str(tmp_path / "d.npz")).y_train) // 16
  schedule = optax.cosine_decay_schedule(train.TrainConfig().lr, 2 * steps)
  lrs = [e.value for e in acc.Scalars("learning_rate")]
  np.testing.assert_allclose(lrs, [schedule(steps - 1), schedule(2 * steps - 1)], rtol=1e-6)
  assert all(np.isfinite(lrs))
  hist = acc.Histograms("weights/layers.1.w")
  assert [h.step for h in hist] == [1, 2] and hist[0].histogram_value.num == 8 * 3  # 8 hidden units to 3 classes
  assert [h.histogram_value.num for h in acc.Histograms("grad_norm")] == [2, 2]  # two weight matrices
  (fig,) = figures  # the same run's curves.png: --log-loss and the title reached the picture
  assert fig.axes[0].get_yscale() == "log"
  assert f"final test accuracy {metrics['final_test_accuracy']:.2%}" in fig._suptitle.get_text()  # pylint: disable=protected-access
  status, err = jaxbp_cmd("train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r2"),
                      "--tensorboard", str(tmp_path / "tb"))
  assert status == 2 and err[-1].startswith(f"jaxbp train: error: --tensorboard {tmp_path / 'tb'} already holds"
                                            " event files")


def test_refusals_are_one_line_before_any_compile(tmp_path, monkeypatch, capsys, jaxbp_cmd):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before refusing")

  monkeypatch.setattr(loop, "_compile", no_compile)
  (tmp_path / "FILE").write_text("mine")
  status, err = jaxbp_cmd("train", "--out", str(tmp_path / "o"), "--tensorboard",
                      str(tmp_path / "FILE"))
  assert status == 2 and err == [f"jaxbp train: error: --tensorboard {tmp_path / 'FILE'}: is a file, not a directory"]
  assert (tmp_path / "FILE").read_text() == "mine"
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a))
  status, err = jaxbp_cmd("train", "--out", str(tmp_path / "o"), "--tensorboard", str(tmp_path / "t"))
  assert status == 2 and err == ['jaxbp train: error: --tensorboard needs tensorboardX, which is not installed:'
                                 ' pip install "jaxbp[tensorboard]"']
