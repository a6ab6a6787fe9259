"""Runs, checkpoints and resume: nothing lost, nothing silently different (issue 9, section 2)."""

import json
import os

import jax
import numpy as np
import pytest
from test_loop import SMALL
from test_loop import AtEpochEnd
from test_loop import Recorder
from test_loop import _dataset

from jaxbp import train
from jaxbp.models import MLP
from jaxbp.train import checkpoint
from jaxbp.train import loop
from jaxbp.train import resume

CONSTANT = SMALL._replace(schedule="constant", epochs=2, model=MLP(hidden=(8,)))


def _resumed(config, epoch):
  history = [{"epoch": i + 1} for i in range(epoch)]
  data = {"name": "blobs", "sha256": "0" * 64, "source": {}}
  return train.Resumed("run/checkpoint.npz", config, epoch, history, data, {}, [])


def test_constant_schedule_extends_a_decaying_one_is_refused_with_what_to_do():
  assert train.continue_config(_resumed(CONSTANT, 2), 7).epochs == 7
  assert train.continue_config(_resumed(CONSTANT, 1)).epochs == 2
  for schedule in ("cosine", "warmup", "warmup-cosine"):
    with pytest.raises(ValueError, match=rf"its {schedule} schedule was built for 5 epochs.*start a new run"):
      train.continue_config(_resumed(CONSTANT._replace(schedule=schedule, epochs=5), 5), 7)
  with pytest.raises(train.ConfigError, match="already trained 2; give more than 2 epochs to train on"):
    train.continue_config(_resumed(CONSTANT, 2))  # a finished run: nothing to continue


def test_resume_checks_the_recorded_class_names():
  data = _dataset()._replace(classes=("a", "b", "c"))
  resumed = _resumed(CONSTANT, 1)._replace(data=train.data_identity(data))
  assert resumed.data["classes"] == ["a", "b", "c"]
  resume.check_continues(CONSTANT, resumed, train.data_identity(data))
  renamed = train.data_identity(data._replace(classes=("a", "c", "b")))
  assert renamed["sha256"] == resumed.data["sha256"]  # the same arrays; only the names of indices 1, 2 swapped
  with pytest.raises(ValueError, match=r"0..2 stand for \['a', 'b', 'c'\], the data now gives \['a', 'c', 'b'\]"):
    resume.check_continues(CONSTANT, resumed, renamed)


def test_run_records_its_data_and_resume_refuses_other_data(tmp_path):
  data, other = _dataset(), _dataset(seed=1)
  out = str(tmp_path / "run")

  def stop(record):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train.fit(CONSTANT, data, out_dir=out, source={"path": "/d.npz"}, observer=AtEpochEnd(stop))
  resumed = train.read_checkpoint(out + "/checkpoint.npz")
  assert resumed.data == train.data_identity(data, {"path": "/d.npz"}) and resumed.epoch == 1
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1]  # written as training goes, not at the end
  with pytest.raises(ValueError, match=r"trained on blobs \(sha256 [0-9a-f]{12}…\), not on blobs"):
    train.fit(CONSTANT, other, out_dir=out, resume=True)
  result = train.fit(CONSTANT._replace(epochs=3), data, out_dir=out, resume=resumed)
  assert [r["epoch"] for r in result.history] == [1, 2, 3]
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
  assert train.read_checkpoint(out + "/checkpoint.npz").data["source"] == {"path": "/d.npz"}


def test_out_onto_a_run_is_refused_unless_overwrite(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "curves.png").write_bytes(b"old")  # the caller's output (outputs=): part of the run in out_dir
  with pytest.raises(train.ConfigError, match=r"already holds a run \(curves.png\); resume it, overwrite it") as e:
    train.fit(CONSTANT, _dataset(), out_dir=str(out), outputs=("curves.png",))
  assert e.value.field == "out_dir"
  train.fit(CONSTANT._replace(epochs=1), _dataset(), out_dir=str(out), outputs=("curves.png",), overwrite=True)
  assert not (out / "curves.png").exists() and sorted(os.listdir(out)) == sorted(train.FIT_FILES)
  (tmp_path / "file").write_text("x")
  with pytest.raises(train.ConfigError, match="is a file, not a directory") as e:
    train.fit(CONSTANT, _dataset(), out_dir=str(tmp_path / "file"))
  assert e.value.field == "out_dir"
  with pytest.raises(train.ConfigError, match="give one of them") as e:
    train.fit(CONSTANT, _dataset(), out_dir=str(out), resume=True, overwrite=True)
  assert e.value.field == "overwrite"


def test_settings_that_train_nothing_are_refused_and_dropped_rows_are_said(monkeypatch):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before refusing")

  monkeypatch.setattr(loop, "_compile", no_compile)
  with pytest.raises(train.ConfigError, match="accumulate 1000 is more than the 12 micro-batches") as e:
    train.fit(CONSTANT._replace(accumulate=1000), _dataset())
  assert e.value.field == "accumulate" and e.value.reason.startswith("1000 is more than")
  seen = Recorder()
  with pytest.raises(AssertionError, match="compiled"):
    train.fit(CONSTANT._replace(accumulate=4), _dataset(n=120), observer=seen)
  said = [call[1] for call in seen.calls if call[0] == "on_warning"]
  assert len(said) == 2 and said[0].startswith("each epoch drops the last 8 of the 120 training examples")
  assert said[1].startswith("the last 2 of the run's 14 micro-batches are accumulated but never applied")
  for field, value in (("seed", -1), ("seed", 2**32), ("lr", float("nan")), ("model", "mlp")):
    with pytest.raises(train.ConfigError) as e:
      train.check_config(CONSTANT._replace(**{field: value}))
    assert e.value.field == field and str(e.value).startswith(field)


@pytest.mark.parametrize("meta,fragment", [
    ([1, 2], "is a list, expected an object"),
    ({"config": {"lr": "x"}, "epoch": 1, "history": [{}]}, "config is unusable"),
    ({"epoch": 1, "history": []}, "config is unusable"),
    ("config-with-string-lr", "lr must be float"),
    ("config-with-bool-epochs", "epochs must be int"),
    ("epoch-past-history", "history does not hold one record"),
    ("string-epoch", "epoch '1' is not a whole number"),
    ("record-out-of-order", r"history\[0\] is not the record of epoch 1"),
    ("record-value", r"history\[0\]\['seconds'\] is str, not a number"),
    ("record-lacking", r"history\[0\] lacks test_loss"),
    ("no-data", "records no data identity"),
    ("data-a-list", "records no data identity"),
    ("classes-not-a-list", "'classes' is not a list"),
])
def test_checkpoint_metadata_that_is_not_a_run_is_one_checkpoint_error(tmp_path, meta, fragment):
  record = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.75, "test_loss": 0.6, "test_accuracy": 0.5,
            "seconds": 1.0}
  good = {"config": CONSTANT.to_json(), "epoch": 1, "history": [record],
          "data": {"name": "d", "sha256": "0" * 64, "source": {}}}
  changed = {"config-with-string-lr": {"config": dict(good["config"], lr="0.1")},
             "config-with-bool-epochs": {"config": dict(good["config"], epochs=True)},
             "string-epoch": {"epoch": "1"}, "record-out-of-order": {"history": [dict(record, epoch=2)]},
             "record-value": {"history": [dict(record, seconds="1")]}, "data-a-list": {"data": ["d.csv"]},
             "record-lacking": {"history": [{k: v for k, v in record.items() if k != "test_loss"}]}}
  if isinstance(meta, str) and meta in changed:
    meta = dict(good, **changed[meta])
  elif meta == "config-with-string-lr":
    meta = dict(good, config=dict(good["config"], lr="0.1"))
  elif meta == "epoch-past-history":
    meta = dict(good, epoch=2)
  elif meta == "classes-not-a-list":
    meta = dict(good, data=dict(good["data"], classes="abc"))
  elif meta == "no-data":
    meta = {k: v for k, v in good.items() if k != "data"}
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, {"w": np.zeros(2)}, meta)
  with pytest.raises(checkpoint.CheckpointError, match=fragment) as e:
    train.read_checkpoint(path)
  assert path in str(e.value)


def test_init_from_starts_a_new_run_from_another_runs_parameters(tmp_path):
  first = str(tmp_path / "first")
  trained = train.fit(CONSTANT._replace(epochs=1), _dataset(), out_dir=first).state
  # another seed and other data: the parameters must come from the checkpoint, not from the seed's init;
  # a learning rate of 1e-30 leaves them where they started (to float32 rounding: atol 1e-20)
  config = CONSTANT._replace(epochs=1, seed=7, lr=1e-30)
  fresh = train.fit(config, _dataset(seed=1)).state
  out = str(tmp_path / "second")
  started = train.fit(config, _dataset(seed=1), out_dir=out, init_from=first + "/checkpoint.npz").state
  for a, b, c in zip(*map(jax.tree_util.tree_leaves, (started.params, trained.params, fresh.params))):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-20)
    assert not np.allclose(b, c)  # a fresh init is far from the trained parameters
  assert int(started.step) == int(fresh.step)  # the step count (and the optimiser state) are the new run's
  meta = checkpoint.read(out + "/checkpoint.npz")[0]["meta"]
  assert meta["init_from"] == {"path": os.path.abspath(first + "/checkpoint.npz"), "epoch": 1, "data": "blobs"}
  resumed = train.fit(config._replace(epochs=2), _dataset(seed=1), out_dir=out, resume=True)
  assert len(resumed.history) == 2
  assert checkpoint.read(out + "/checkpoint.npz")[0]["meta"]["init_from"] == meta["init_from"]  # kept on resume


def test_init_from_another_model_or_with_resume_is_refused(tmp_path):
  first = str(tmp_path / "first")
  train.fit(CONSTANT._replace(epochs=1), _dataset(), out_dir=first)
  wider = CONSTANT._replace(model=MLP(hidden=(9,)))
  wrong = r"\['layers'\]\[0\]\['b'\] has shape \(8,\) float32, the model expects \(9,\)"
  with pytest.raises(checkpoint.CheckpointError, match=wrong):
    train.fit(wider, _dataset(), init_from=first + "/checkpoint.npz")
  deeper = CONSTANT._replace(model=MLP(hidden=(8, 8)))
  with pytest.raises(checkpoint.CheckpointError, match=r"another model's params.*expected but absent: \[\"\.params"):
    train.fit(deeper, _dataset(), init_from=first + "/checkpoint.npz")
  with pytest.raises(train.ConfigError, match="resume continues the run") as e:
    train.fit(CONSTANT, _dataset(), out_dir=first, resume=True, init_from=first + "/checkpoint.npz")
  assert e.value.field == "init_from"
