"""Multi-device training on CPU host devices runs to the end (issue 19): ``fit`` keeps at most
``train.IN_FLIGHT`` steps in flight, as XLA:CPU needs (docs/training.md, "Steps in flight")."""

import json
import os
import subprocess
import sys
import textwrap

from jaxbp import train
from jaxbp.check._sharded import host_devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# A run on 2 host devices: "full" trains 3 epochs; "abort" dies as XLA's collective timeout kills a process
# (SIGABRT, os.abort) at step 3 of epoch 2's 6; "resume" continues the aborted run's directory.
_RUN = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from jaxbp import train
    from jaxbp.train.data import Dataset
    from jaxbp.models import MLP
    mode, out = sys.argv[1:]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 126).astype(np.int32)
    x = (rng.normal(0, 2, (3, 8))[y] + rng.normal(0, 1, (126, 8))).astype(np.float32)
    data = Dataset(x[:96], y[:96], x[96:], y[96:], (0, 1, 2), "blobs")
    config = train.TrainConfig(model=MLP(hidden=(16,)), batch_size=16, epochs=3, lr=1e-2)

    class Abort(train.FitObserver):
      def on_step(self, epoch, step):
        if mode == "abort" and epoch == 2 and step == 3:
          os.abort()

    result = train.fit(config, data, out_dir=out, resume=mode == "resume", mesh=train.make_mesh(2), observer=Abort())
    print(json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in result.history]))
""")


def _run(mode, out):
  return subprocess.run([sys.executable, "-c", _RUN, mode, str(out)], env=host_devices_env(2), capture_output=True,
                        text=True, timeout=300, check=False)


def test_a_run_aborted_mid_epoch_on_two_host_devices_resumes_to_the_uninterrupted_result(tmp_path):
  full = _run("full", tmp_path / "full")
  assert full.returncode == 0, full.stderr[-3000:]
  aborted = _run("abort", tmp_path / "cut")
  assert aborted.returncode == -6, aborted.stderr[-3000:]  # SIGABRT, as XLA's "Termination timeout" exits
  assert train.read_checkpoint(str(tmp_path / "cut" / train.CHECKPOINT)).epoch == 1  # epoch 2's steps are lost
  resumed = _run("resume", tmp_path / "cut")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  history = json.loads(full.stdout.strip().splitlines()[-1])
  assert len(history) == 3 and json.loads(resumed.stdout.strip().splitlines()[-1]) == history


class _Device:
  """The slowest device there is: it runs a dispatched step only when the host waits for its output."""

  def __init__(self):
    self.unfinished: list[int] = []
    self.most = 0

  def dispatch(self, i: int) -> None:
    self.unfinished.append(i)
    self.most = max(self.most, len(self.unfinished))


class _Output:
  def __init__(self, device: _Device, i: int):
    self.device, self.i = device, i

  def block_until_ready(self):  # what jax.block_until_ready calls on a leaf
    self.device.unfinished = [j for j in self.device.unfinished if j > self.i]
    return self


def test_run_steps_never_has_more_than_in_flight_steps_unfinished():
  # XLA:CPU's per-device limit is 32 programs in flight; at 32 the deadlock can start
  assert 1 <= train.IN_FLIGHT < 32
  device, told = _Device(), []

  def step(state, i):
    device.dispatch(i)
    return state + [i], {"loss": _Output(device, i)}

  state, metrics = train.run_steps(step, [], iter(range(100)), told.append)
  assert state == list(range(100)) and [m["loss"].i for m in metrics] == list(range(100))
  assert told == list(range(1, 101))
  assert device.most == train.IN_FLIGHT  # bounded, and not by blocking on every step
  assert device.unfinished == list(range(100 - train.IN_FLIGHT, 100))  # the last ones are left running


def test_soak_transformer_two_epochs_on_two_host_devices_equals_one_device():
  # benchmarks/soak_multidevice.py's short form: 2 epochs of 40 steps (batch 256, a 1-layer width-32
  # transformer), on one device and on 2 host devices in one process: 12-15 s of CPU time, 60-95 s of wall time
  # at load 12-14 on this 2-core machine, most of it compiling (two step, evaluation and initialiser programs).
  out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "soak_multidevice.py"), "--short"],
                       env=host_devices_env(2, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=400,
                       check=False)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["ok"] and result["devices"] == 2 and result["steps"] == 80, result
  assert result["mesh"]["epoch"] == 2 and max(result["rel"].values()) <= 1e-3
