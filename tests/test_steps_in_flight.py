"""Multi-device training on CPU host devices runs to the end (issue 19): ``fit`` keeps at most
``train.IN_FLIGHT`` steps in flight, as XLA:CPU needs (docs/training.md, "Steps in flight")."""

import json
import os
import subprocess
import sys

from jaxbp import train
from jaxbp.check._sharded import host_devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class _Bar:
  n = 0

  def update(self, n):
    self.n += n


def test_run_steps_never_has_more_than_in_flight_steps_unfinished():
  # XLA:CPU's per-device limit is 32 programs in flight; at 32 the deadlock can start
  assert 1 <= train.IN_FLIGHT < 32
  device, bar = _Device(), _Bar()

  def step(state, i):
    device.dispatch(i)
    return state + [i], {"loss": _Output(device, i)}

  state, metrics = train.run_steps(step, [], iter(range(100)), bar)
  assert state == list(range(100)) and [m["loss"].i for m in metrics] == list(range(100)) and bar.n == 100
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
