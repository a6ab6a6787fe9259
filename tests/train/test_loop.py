"""jaxbp.train: whole-model equivalence with autodiff, the optax pieces, non-finite stops, exact resume,
and data parallelism over four (forced) CPU devices."""


import chex
import jax
import numpy as np
import pytest

from jaxbp import train
from jaxbp.models import MLP
from jaxbp.models import DataSpec
from jaxbp.models import Linear
from jaxbp.train import checkpoint
from jaxbp.train import loop
from jaxbp.train.data import Dataset


def _dataset(n=96, d=8, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 2, size=(classes, d))
  y = rng.integers(0, classes, size=n + 30)
  x = (centres[y] + rng.normal(0, 1, size=(n + 30, d))).astype(np.float32)
  return Dataset(x[:n], y[:n].astype(np.int32), x[n:], y[n:].astype(np.int32), tuple(range(classes)), "blobs")


SMALL = train.TrainConfig(model=MLP(hidden=(16,)), batch_size=16, epochs=3, lr=1e-2)
SPEC = DataSpec("features", (8,), 3)


def test_fit_learns_with_hinge_l2_clip_accumulate():
  config = SMALL._replace(model=Linear(), loss="hinge", l2=1e-3, clip=1.0, accumulate=2, optimizer="momentum", lr=0.1,
                          epochs=4)
  result = train.fit(config, _dataset())
  assert result.history[-1]["test_accuracy"] > 0.9
  assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]


class Recorder(train.FitObserver):
  """Every hook's call, in order, with its arguments (the state by its step count)."""

  def __init__(self):
    self.calls = []

  def on_warning(self, message):
    self.calls.append(("on_warning", message))

  def on_checked(self, start_epoch, steps_per_epoch):
    self.calls.append(("on_checked", start_epoch, steps_per_epoch))

  def on_epoch_start(self, epoch, steps):
    self.calls.append(("on_epoch_start", epoch, steps))

  def on_step(self, epoch, step):
    self.calls.append(("on_step", epoch, step))

  def on_epoch_end(self, record, state):
    self.calls.append(("on_epoch_end", record, int(state.step)))


class AtEpochEnd(Recorder):
  """Calls ``then(record)`` after each epoch (to poison the data or interrupt the run); records the rest."""

  def __init__(self, then):
    super().__init__()
    self.then = then

  def on_epoch_end(self, record, state):
    self.then(record)


def test_observer_hears_each_hook_in_order_with_its_arguments(tmp_path, shared_compiles):
  """2 epochs of 110 examples in batches of 32: 3 steps each, 14 examples dropped (a warning); a run cut
  after epoch 1 then resumed reports from the checkpoint's epoch on."""
  config, data, seen = SMALL._replace(epochs=2, batch_size=32), _dataset(n=110), Recorder()
  result = train.fit(config, data, out_dir=str(tmp_path / "full"), observer=seen)
  epoch = lambda e, history: [("on_epoch_start", e, 3), *(("on_step", e, s) for s in (1, 2, 3)),
                              ("on_epoch_end", history[e - 1], 3 * e)]
  assert seen.calls[0][0] == "on_warning" and seen.calls[0][1].startswith("each epoch drops the last 14 of the 110")
  assert seen.calls[1:] == [("on_checked", 0, 3), *epoch(1, result.history), *epoch(2, result.history)]

  def stop(record):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train.fit(config, data, out_dir=str(tmp_path / "cut"), observer=AtEpochEnd(stop))
  resumed = Recorder()
  result = train.fit(config, data, out_dir=str(tmp_path / "cut"), resume=True, observer=resumed)
  assert resumed.calls[1:] == [("on_checked", 1, 3), *epoch(2, result.history)]


def test_default_observer_warns_at_the_caller(monkeypatch):
  monkeypatch.setattr(loop, "_compile", _refuse_to_compile)
  with pytest.warns(UserWarning, match="each epoch drops the last 8 of the 104") as caught:
    with pytest.raises(AssertionError, match="compiled"):
      train.fit(SMALL, _dataset(n=104))
  assert caught[0].filename == __file__  # stacklevel: the line calling fit, not fit's inside


def _refuse_to_compile(*args, **kwargs):
  raise AssertionError("compiled")


def test_non_finite_gradient_stops_with_step_and_checkpoint(tmp_path):
  data = _dataset()
  poison_row = 5

  def poison(record):
    if record["epoch"] == 1:
      data.x_train[poison_row, 0] = np.nan

  with pytest.raises(train.NonFiniteError) as e:
    train.fit(SMALL, data, out_dir=str(tmp_path), observer=AtEpochEnd(poison))
  order = train.epoch_order(SMALL.seed, 1, 96, 16)
  bad_step = 6 + int(np.argwhere(order == poison_row)[0, 0]) + 1
  message = str(e.value)
  assert f"step {bad_step} (epoch 2)" in message and "after epoch 1" in message and "checkpoint.npz" in message
  saved, meta = checkpoint.load(str(tmp_path / "checkpoint.npz"), jax.eval_shape(
      lambda: train.init_state(SMALL, SPEC, train.make_optimizer(SMALL, 18))))
  assert meta["epoch"] == 1
  chex.assert_tree_all_finite(saved.params)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, shared_compiles):
  config = SMALL._replace(optimizer="adamw", schedule="cosine", model=MLP(hidden=(16,), dropout=0.2, batch_norm=True),
                          epochs=3)
  data = _dataset()
  full = train.fit(config, data, out_dir=str(tmp_path / "full"))

  def crash(record):
    if record["epoch"] == 1:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train.fit(config, data, out_dir=str(tmp_path / "cut"), observer=AtEpochEnd(crash))
  resumed = train.fit(config, data, out_dir=str(tmp_path / "cut"), resume=True)
  chex.assert_trees_all_equal(resumed.state, full.state)
  drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
  assert drop(resumed.history) == drop(full.history)
  with pytest.raises(ValueError, match=r"lr=0.01 \(now 0.5\)"):
    train.fit(config._replace(lr=0.5), data, out_dir=str(tmp_path / "cut"), resume=True)


def test_bad_batch_size_and_config():
  with pytest.raises(ValueError, match="larger than the 96 training examples"):
    train.fit(SMALL._replace(batch_size=200), _dataset())
  with pytest.raises(ValueError, match="optimizer must be one of"):
    train.check_config(SMALL._replace(optimizer="lion"))
