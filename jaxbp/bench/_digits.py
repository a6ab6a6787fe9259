"""Time to 97% test accuracy on the digits: start-up, compile and training time, JAX vs PyTorch.

Both sides train the same 64-256-256-10 ReLU MLP from the same He-initialised weights with Adam
(lr 1e-3, batch 32, the same batch order from ``jaxbp.train.epoch_order``, seed 0) on the same split
(``jaxbp.train.data.stratified_split``, 80/20, seed 0; features scaled to [0, 1]) and stop at the first epoch
whose test accuracy reaches the target. Start-up is measured in fresh interpreters (importing the
framework and running one tiny op); compile time is the first step and the first evaluation.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = (64, 256, 256, 10)
BATCH = 32
LR = 1e-3

_STARTUP = {
    "jax": "import jax, jax.numpy as jnp, optax, jaxbp.ops; jnp.zeros(1).block_until_ready()",
    "torch": "import torch; torch.zeros(1) + 1",
}


def load(seed=0):
  """``(x_train, x_test, y_train, y_test)`` of scikit-learn's bundled digits: float32 pixels in [0, 1],
  int32 labels, split 80/20 by ``jaxbp.train.data.stratified_split(y, 0.2, seed)``."""
  from jaxbp.train import data
  x, y = data.load_digits()
  x, y = (x / 16.0).astype(np.float32), y.astype(np.int32)
  train_idx, test_idx = data.stratified_split(y, test_fraction=0.2, seed=seed)
  return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


def startup_seconds(framework, runs):
  """Median wall time of ``runs`` fresh interpreters that import ``framework`` and run one op."""
  if runs < 1:
    return None
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _STARTUP[framework]], check=True, capture_output=True)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def train_jax(data, target, max_epochs, seed=0):
  """Trains on ``jaxbp.ops`` until test accuracy reaches ``target``; returns the timings."""
  import jax
  import optax

  from jaxbp import ops
  from jaxbp.bench import _models

  x_tr, x_te, y_tr, y_te = data
  spec = _models.ModelSpec("digits", SIZES, BATCH)
  params, _, _ = _models.make_batch(spec, seed=seed)
  opt = optax.adam(LR)

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(lambda p: _models.mlp_loss(ops, p, x, y))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def accuracy(params, x, y):
    return (_models.mlp_logits(ops, params, x).argmax(-1) == y).mean()

  state = [params, opt.init(params)]

  def run_step(idx):
    state[:] = step(state[0], state[1], x_tr[idx], y_tr[idx])

  def evaluate():
    return float(accuracy(state[0], x_te, y_te))
  return _loop(run_step, evaluate, len(x_tr), target, max_epochs, seed,
               sync=lambda: jax.block_until_ready(state))


def _torch_mlp(params):
  """The ReLU MLP ``params = [(w [D_in, D_out], b [D_out]), ...]`` as a ``torch.nn.Sequential``, same weights."""
  import torch
  layers = []
  for w, b in params:
    layer = torch.nn.Linear(*w.shape)
    with torch.no_grad():  # nn.Linear stores W transposed: [D_out, D_in]
      layer.weight.copy_(torch.tensor(np.asarray(w).T))
      layer.bias.copy_(torch.tensor(np.asarray(b)))
    layers += [layer, torch.nn.ReLU()]
  return torch.nn.Sequential(*layers[:-1])


def train_torch(data, target, max_epochs, seed=0):
  """The same training in PyTorch eager, from the same initial weights; returns the timings."""
  import torch

  from jaxbp.bench import _models

  x_tr, x_te, y_tr, y_te = (torch.tensor(np.asarray(a)) for a in data)
  params, _, _ = _models.make_batch(_models.ModelSpec("digits", SIZES, BATCH), seed=seed)
  model = _torch_mlp(params)
  opt = torch.optim.Adam(model.parameters(), lr=LR)

  def run_step(idx):
    idx = torch.from_numpy(idx)
    loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx].long())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def evaluate():
    with torch.no_grad():
      return float((model(x_te).argmax(-1) == y_te).float().mean())
  return _loop(run_step, evaluate, len(x_tr), target, max_epochs, seed, sync=lambda: None)


def _loop(run_step, evaluate, n, target, max_epochs, seed, sync):
  from jaxbp import train
  start = time.perf_counter()
  # The first call: tracing and compilation (JAX), allocator warm-up (PyTorch).
  run_step(train.epoch_order(seed, 0, n, BATCH)[0])
  sync()
  evaluate()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  accuracy, epochs = 0.0, 0
  while epochs < max_epochs and accuracy < target:
    for idx in train.epoch_order(seed, epochs, n, BATCH):
      run_step(idx)
    epochs += 1
    accuracy = evaluate()
  return {"compile_s": compile_s, "train_s": time.perf_counter() - start, "epochs": epochs,
          "accuracy": accuracy, "reached": accuracy >= target}


def jaxbp_train_command(timeout_s):
  """Wall time of the whole ``jaxbp train`` command with its defaults (start-up included), and the
  ``final_test_accuracy`` it wrote to its ``metrics.json``."""
  with tempfile.TemporaryDirectory() as cwd:
    out = os.path.join(cwd, "run")
    start = time.perf_counter()
    try:
      proc = subprocess.run([sys.executable, "-m", "jaxbp", "train", "--out", out], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout_s,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
      return {"wall_s": None, "returncode": None, "tail": f"timed out after {timeout_s} s"}
    wall = time.perf_counter() - start
    try:
      with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        accuracy = json.load(f)["final_test_accuracy"]
    except (OSError, KeyError, ValueError):
      accuracy = None
  output = proc.stdout + proc.stderr
  return {"wall_s": wall, "returncode": proc.returncode, "test_accuracy": accuracy,
          "tail": output.strip().splitlines()[-2:]}


def measure(*, target, max_epochs, startup_runs, with_torch, train_command):
  """Every digits figure in one dict: start-up, compile, training time, epochs, per framework."""
  data = load()
  frameworks = {"jax (jaxbp.ops)": ("jax", train_jax)}
  if with_torch:
    frameworks["torch eager"] = ("torch", train_torch)
  out = {"target": target, "frameworks": {}}
  for name, (startup_key, train) in frameworks.items():
    result = train(data, target, max_epochs)
    result["startup_s"] = startup_seconds(startup_key, startup_runs)
    out["frameworks"][name] = result
  if train_command:
    out["jaxbp_train"] = jaxbp_train_command(timeout_s=120)
  return out
