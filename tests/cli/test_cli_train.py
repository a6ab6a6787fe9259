"""``jaxbp train`` and ``jaxbp info`` as a newcomer runs them: the default run's accuracy and artifacts,
resume, one-line errors and the missing-extra message."""

import argparse
import functools
import gc
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxbp import models
from jaxbp import train
from jaxbp.cli import train as cli_train
from jaxbp.models import mlp
from jaxbp.models._registry import HEADS
from jaxbp.train import checkpoint
from jaxbp.train import loop
from jaxbp.train.config import DTYPES


def _jaxbp(*args, cwd=None):
  code = ("import sys, jaxbp.cli as c; c.COMMANDS = {k: c.COMMANDS[k] for k in ('train', 'info')};"
          " sys.exit(c.main(sys.argv[1:]))")
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                        timeout=240, check=False)


def test_default_run_reaches_97_percent_and_writes_artifacts(tmp_path):
  out = _jaxbp("train", "--out", str(tmp_path / "run"))
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert metrics["final_test_accuracy"] >= 0.97
  epochs = train.TrainConfig().epochs
  assert len(metrics["test_accuracy"]) == metrics["config"]["epochs"] == epochs
  for key in ("train_loss", "train_accuracy", "test_loss", "wall_seconds", "compile_seconds", "device"):
    assert key in metrics
  assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  doc, _ = checkpoint.read(str(tmp_path / "run" / "checkpoint.npz"))
  assert doc["meta"]["epoch"] == epochs
  assert "test accuracy" in out.stdout and f"epoch {epochs}/{epochs}" in out.stderr


def test_grad_flow_writes_norms_and_their_plot(tmp_path, jaxbp_cmd):
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 90)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(90, 4)) + y[:, None], y=y)
  status, err = jaxbp_cmd("train", "--data", str(tmp_path / "d.npz"), "--hidden", "8,8", "--batch-size", "16",
                          "--epochs", "2", "--grad-flow", "--out", str(tmp_path / "g"))
  assert status == 0, err
  history = json.loads((tmp_path / "g" / "metrics.json").read_text())["history"]
  assert [len(r["layer_grad_norms"]) for r in history] == [3, 3]
  assert all(n > 0 for r in history for n in r["layer_grad_norms"])
  assert (tmp_path / "g" / "grad_flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "grad_flow.png" in jaxbp_cmd.stdout


def test_resume_extends_a_run_and_bad_input_is_one_line(tmp_path, jaxbp_cmd):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 60)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 3)) + y[:, None], y=y)
  small = ["train", "--data", str(tmp_path / "d.npz"), "--hidden", "8", "--batch-size", "16", "--no-plot",
           "--schedule", "constant", "--out", str(tmp_path / "r")]
  assert jaxbp_cmd(*small, "--epochs", "1")[0] == 0
  status, err = jaxbp_cmd(*small, "--epochs", "2", "--resume", "--lr", "0.5")
  assert status == 0, err
  assert any("ignoring --lr" in line for line in err)
  metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
  assert [r["epoch"] for r in metrics["history"]] == [1, 2] and metrics["config"]["lr"] == 2e-3
  (tmp_path / "bad.csv").write_text("a,label\n1,0\n2\n")
  status, err = jaxbp_cmd("train", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "b"))
  assert status == 2  # in this process, a traceback would be the exception failing the test
  assert err[-1] == f"jaxbp train: error: {tmp_path / 'bad.csv'}: line 3 has 1 fields, the header has 2"
  assert "Traceback" not in "\n".join(err)


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tqdm" else real(name, *a))
  parser = argparse.ArgumentParser()
  cli_train.configure(parser)
  assert cli_train.run(parser.parse_args([])) == 1
  err = capsys.readouterr().err.strip()
  assert err == 'jaxbp train: missing tqdm; install the training extra: pip install "jaxbp[train]"'


def test_help_documents_every_flag_and_choices_match_the_library():
  parser = argparse.ArgumentParser()
  cli_train.configure(parser)
  text = parser.format_help()
  for flag in ("--model", "--hidden", "--activation", "--init", "--optimizer", "--lr", "--schedule", "--epochs",
               "--batch-size", "--weight-decay", "--l2", "--clip", "--accumulate", "--batch-norm", "--dropout",
               "--residual", "--data", "--label-column", "--seed", "--devices", "--out", "--resume", "--autodiff",
               "--coordinator-address", "--num-processes", "--process-id", "--dtype"):
    assert flag in text
  for choices in (train.OPTIMIZERS, train.SCHEDULES, models.names(), HEADS, mlp.ACTIVATIONS, mlp.INITS, DTYPES):
    assert "{" + ",".join(choices) + "}" in text.replace("\n", "").replace(" ", "")
  defaults = cli_train._config_from_args(parser.parse_args([]))  # pylint: disable=protected-access
  assert defaults == train.TrainConfig()
  assert cli_train._config_from_args(parser.parse_args(["--dtype", "bfloat16"])).dtype == "bfloat16"  # pylint: disable=protected-access


def test_info_lists_versions_and_devices(capsys):
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["info"]) == 0
  out = capsys.readouterr().out
  assert "jax " in out and "backend" in out and "default float     float32" in out




@pytest.mark.parametrize("flags,fragment", [
    (["--resume"], "--resume needs --out DIR"),
    (["--batch-size", "5000"], "--batch-size 5000 is larger than the 1438 training examples"),
    (["--devices", "3"], "--devices must be between 1 and 1 (the devices JAX sees), got 3; on a CPU,"
                         " XLA_FLAGS=--xla_force_host_platform_device_count=N gives N devices"),
    (["--seed", "99999999999999999999"], "--seed must be between 0 and 4294967295 (2**32 - 1)"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--label-column", "y"], "--label-column names the label column of a .csv --data file; there is no --data"),
    (["--model", "linear", "--hidden", "8"], "--hidden does not apply to --model linear (its flags: --init)"),
    (["--loss", "hinge", "--dropout", "1.5"], "--model mlp: MLPConfig.dropout must be in [0, 1), got 1.5"),
    (["--accumulate", "1000", "--epochs", "2"], "--accumulate 1000 is more than the 44 micro-batches"),
    (["--out", "FILE"], "--out FILE is a file, not a directory"),
    (["--task", "lookup", "--task-length", "8"], "--task-length must be an integer in 96..65536 for lookup, got 8"),
    (["--task", "sort", "--task-length", "0"], "--task-length must be an integer in 1..32 for sort, got 0"),
    (["--model", "lstm", "--task-length", "33"], "--task-length must be an integer in 1..32 for reverse, got 33"),
    (["--task", "copy"], "argument --task: invalid choice: 'copy'"),
])
def test_flag_errors_are_one_line_before_any_compile(tmp_path, monkeypatch, capsys, flags, fragment, jaxbp_cmd):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before refusing")

  monkeypatch.setattr(loop, "_compile", no_compile)
  (tmp_path / "FILE").write_text("")
  flags = [str(tmp_path / "FILE") if f == "FILE" else f for f in flags]
  fragment = fragment.replace("FILE", str(tmp_path / "FILE"))
  out = [] if "--out" in flags or "--resume" in flags else ["--out", str(tmp_path / "o")]
  status, err = jaxbp_cmd("train", "--no-plot", *out, *flags)
  assert status == 2 and len([line for line in err if "warning" not in line]) == 1, err
  assert fragment in err[-1] and err[-1].startswith("jaxbp train: error: ")


def test_resume_takes_typed_flags_the_recorded_data_and_refuses_other_data(tmp_path, monkeypatch, capsys, jaxbp_cmd):
  rng = np.random.default_rng(0)
  for name in ("d", "other"):
    y = rng.integers(0, 2, 60)
    np.savez(tmp_path / f"{name}.npz", x=rng.normal(size=(60, 3)) + y[:, None], y=y)
  out = str(tmp_path / "r")
  small = ["train", "--hidden", "8", "--batch-size", "16", "--no-plot", "--out", out]
  assert jaxbp_cmd(*small, "--data", str(tmp_path / "d.npz"), "--schedule", "constant",
               "--epochs", "1")[0] == 0
  status, err = jaxbp_cmd(*small, "--data", str(tmp_path / "d.npz"), "--epochs", "2")
  assert status == 2 and "already holds a run (checkpoint.npz, metrics.json, metrics.jsonl)" in err[-1]
  status, err = jaxbp_cmd(*small, "--resume", "--epochs", "3", "--data", str(tmp_path / "other.npz"))
  assert status == 2 and f"not on {tmp_path / 'other.npz'}" in err[-1]
  assert not any("resuming from" in line for line in err), err  # only what is true: it did not resume
  status, err = jaxbp_cmd(*small[:-2], "--resume", "--out", out, "--epochs", "40", "--lr", "0.002")
  assert status == 0, err
  assert "jaxbp train: resuming with the checkpoint's config; ignoring --lr" in err[0]  # typed at its default
  assert f"jaxbp train: resuming from epoch 1 of 40 ({out}/checkpoint.npz)" in err
  metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
  assert len(metrics["history"]) == 40 and metrics["data"]["source"] == {"path": str(tmp_path / "d.npz")}
  assert metrics["data"]["name"] == str(tmp_path / "d.npz")  # the recorded data, not the digits


def test_overwrite_deletes_every_output_of_the_run_it_replaces(tmp_path, jaxbp_cmd):
  """--overwrite removes what the command wrote before, all of it: grad_flow_time.png was left behind once (the
  list of a run's files lacked it), so a run without --grad-flow showed the last run's plot beside its own."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 40)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 3)) + y[:, None], y=y)
  run = ["train", "--data", str(tmp_path / "d.npz"), "--hidden", "4", "--batch-size", "20", "--epochs", "1",
         "--no-plot", "--out", str(tmp_path / "r")]
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "grad_flow_time.png").write_bytes(b"an earlier run's plot")
  status, err = jaxbp_cmd(*run)
  assert status == 2 and "already holds a run (grad_flow_time.png)" in err[-1]
  assert jaxbp_cmd(*run, "--overwrite")[0] == 0
  assert sorted(os.listdir(tmp_path / "r")) == ["checkpoint.npz", "metrics.json", "metrics.jsonl"]
  assert set(cli_train.OUTPUT_FILES) >= {"metrics.json", "curves.png", "grad_flow.png", "grad_flow_time.png"}


@pytest.mark.parametrize("model", ["lstm", "rnn", "transformer"])
def test_a_sequence_model_alone_trains_its_default_task_and_says_so(model, tmp_path, monkeypatch, jaxbp_cmd):
  from jaxbp.train import tasks  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(tasks, "load_task", functools.partial(tasks.load_task, length=3, num_train=128, num_test=16))

  def stop(*args, **kwargs):  # everything is checked and the banner said; no need to compile
    raise KeyboardInterrupt
  monkeypatch.setattr(loop, "_compile", stop)
  status, err = jaxbp_cmd("train", "--model", model, "--no-plot", "--out", str(tmp_path / "r"))
  assert status == 130, err
  assert f"task {tasks.DEFAULT_TASK} (length 3, seed 0) (the default task of --model {model}; --task to choose)" \
      in err[0], err


def test_init_from_goes_on_at_a_longer_task_length(tmp_path, monkeypatch, jaxbp_cmd):
  """Context extension as a user runs it: a llama trained on lookup rows of 96 goes on at 192 from its weights."""
  from jaxbp.train import tasks  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(tasks, "load_task", functools.partial(tasks.load_task, num_train=32, num_test=8))
  tiny = ["train", "--model", "llama", "--task", "lookup", "--width", "16", "--heads", "2", "--kv-heads", "1",
          "--mlp-width", "16", "--batch-size", "16", "--epochs", "1", "--no-plot"]
  short, long = str(tmp_path / "short"), str(tmp_path / "long")
  assert jaxbp_cmd(*tiny, "--task-length", "96", "--out", short)[0] == 0
  status, err = jaxbp_cmd(*tiny, "--task-length", "192", "--init-from", short, "--out", long)
  assert status == 0, err
  assert (f"; starting from the parameters of {short}/checkpoint.npz (epoch 1 of a llama run on task lookup"
          " (length 96, seed 0))") in err[0], err
  metrics = json.loads((tmp_path / "long" / "metrics.json").read_text())
  assert metrics["data"]["name"] == "task lookup (length 192, seed 0)"
  per_token = metrics["history"][-1]["test_token_accuracy"]  # lookup's measure: exact match asks all 8 queries
  assert f"(whole sequence; {per_token:.2%} per answer token) after 1 epochs" in jaxbp_cmd.stdout


def test_init_from_another_model_a_directory_without_a_run_or_with_resume_is_one_line(tmp_path, jaxbp_cmd):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 40)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 3)) + y[:, None], y=y)
  small = ["train", "--data", str(tmp_path / "d.npz"), "--batch-size", "20", "--epochs", "1", "--no-plot"]
  assert jaxbp_cmd(*small, "--hidden", "4", "--out", str(tmp_path / "first"))[0] == 0
  for flags, fragment in [(["--hidden", "5"], ".params['layers'][0]['b'] has shape (4,) float32, the model"
                                              " expects (5,) float32"),
                          (["--init-from", str(tmp_path)], f"--init-from {tmp_path}: the directory holds no"
                                                           " checkpoint.npz"),
                          (["--init-from", str(tmp_path / "none")], f"--init-from {tmp_path / 'none'}: no such run"
                                                                    " directory or checkpoint file"),
                          (["--resume", "--out", str(tmp_path / "first")],
                           "argument --resume: not allowed with argument --init-from")]:
    status, err = jaxbp_cmd(*small, "--init-from", str(tmp_path / "first"), "--out", str(tmp_path / "o"), *flags)
    assert status == 2 and fragment in err[-1] and err[-1].startswith("jaxbp train: error: "), err


def test_a_sequence_model_on_a_features_file_is_refused(tmp_path, jaxbp_cmd):
  np.savez(tmp_path / "d.npz", x=np.zeros((40, 3)), y=np.arange(40) % 2)
  status, err = jaxbp_cmd("train", "--model", "lstm", "--data", str(tmp_path / "d.npz"), "--batch-size", "8",
                          "--no-plot", "--out", str(tmp_path / "r"))
  assert status == 2 and "lstm: needs token sequences (--task), got features data" in err[-1], err


def test_interrupted_says_what_is_true():
  assert cli_train._interrupted(None, 0) == "interrupted before the first epoch finished; no checkpoint was written"
  assert cli_train._interrupted("runs/x", 0).startswith("interrupted before the first epoch")
  assert cli_train._interrupted("runs/x", 3) == (
      "interrupted; runs/x/checkpoint.npz holds epoch 3: continue with jaxbp train --out runs/x --resume")


def test_ctrl_c_mid_epoch_says_the_checkpoints_epoch_last(tmp_path, monkeypatch, capsys, jaxbp_cmd):
  """Ctrl-C in epoch 2's second step: the message names epoch 1 (what fit reported to the command's observer),
  and it is the last thing said: the cut epoch's bar is closed before it, not redrawn after."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 64)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, 3)) + y[:, None], y=y)
  real, epochs = loop.run_steps, []

  def cut(step, state, batches, on_step=None):
    epochs.append(len(epochs) + 1)
    if len(epochs) == 2:
      on_step(1)
      raise KeyboardInterrupt
    return real(step, state, batches, on_step)
  monkeypatch.setattr(loop, "run_steps", cut)
  out = str(tmp_path / "r")
  status, err = jaxbp_cmd("train", "--data", str(tmp_path / "d.npz"), "--hidden", "4", "--batch-size", "16",
                          "--epochs", "3", "--no-plot", "--out", out)
  gc.collect()  # a bar left open would redraw itself when collected
  err += capsys.readouterr().err.strip().splitlines()
  assert status == 130 and err[-1] == (f"jaxbp train: interrupted; {out}/checkpoint.npz holds epoch 1: continue"
                                       f" with jaxbp train --out {out} --resume"), err
  assert "epoch 2/3" in err[-2] and "1/3" in err[-2], err  # the cut bar, closed at its first step


def test_two_local_processes_train_like_one(tmp_path, jaxbp_cmd):
  """Multi-host through jax.distributed.initialize: two CPU processes (gloo collectives), one device each."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 90)
  np.savez(tmp_path / "d.npz", x=rng.normal(size=(90, 4)) + y[:, None], y=y)
  common = ["train", "--data", str(tmp_path / "d.npz"), "--hidden", "8", "--batch-size", "16", "--epochs", "2",
            "--no-plot"]
  code = ("import sys, jaxbp.cli as c; c.COMMANDS = {'train': c.COMMANDS['train']}; sys.exit(c.main(sys.argv[1:]))")
  procs = [subprocess.Popen(
      [sys.executable, "-c", code, *common, "--out", str(tmp_path / "multi"), "--devices", "2",
       "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
      for i in range(2)]
  results = [p.communicate(timeout=240) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
  assert jaxbp_cmd(*common, "--out", str(tmp_path / "single"))[0] == 0  # the reference run, in this process
  multi = json.loads((tmp_path / "multi" / "metrics.json").read_text())
  single = json.loads((tmp_path / "single" / "metrics.json").read_text())
  assert multi["num_devices"] == 2
  np.testing.assert_allclose(multi["train_loss"], single["train_loss"], rtol=1e-5)
  assert multi["test_accuracy"] == single["test_accuracy"]
