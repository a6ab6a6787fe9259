"""What the model families' tests share: one training step over a (data, model) mesh against one device."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxbp.check._sharded import host_devices_env

# The training step itself (make_train_step over make_mesh(devices, model_parallel), state placed by
# state_shardings) with SGD at lr 1: the update is minus the gradient, so equal new parameters are equal
# gradients. {imports}, {config}, {batch}, {devices}, {parallel} and {after} (asserts on `many`, `mesh`, `config`)
# are the family's.
SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxbp import models, train
    {imports}
    config = {config}
    spec = models.DataSpec("tokens", (8,), 13, 13)
    rng = np.random.default_rng(1)
    batch = tuple(jnp.asarray(rng.integers(0, 13, size=({batch}, 8)), jnp.int32) for _ in range(2))
    batch += (jnp.asarray(np.arange(8) >= 3, jnp.float32) * jnp.ones(({batch}, 1)),)
    sgd = optax.sgd(1.0)
    state = train.init_state(config, spec, sgd)
    step = lambda **kw: train.make_train_step(train.make_loss_fn(config, spec), sgd, donate=False, **kw)
    one, m1 = step()(state, batch)
    mesh = train.make_mesh({devices}, {parallel})
    held = train.state_shardings(mesh, state, config.family)
    many, m2 = step(mesh=mesh, state_sharding=held)(train.place(state, held),
                                                   train.place(batch, NamedSharding(mesh, P("data"))))
    grad = lambda s: jax.tree.map(lambda new, old: old - new, s.params, state.params)
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grad(one)), jax.tree.leaves(grad(many))))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(grad(one)))
    print("devices", jax.device_count(), "loss", float(m1["loss"]), float(m2["loss"]), "max error", err, scale)
    assert abs(float(m1["loss"]) - float(m2["loss"])) <= 1e-6 * float(m1["loss"])
    assert err <= 1e-5 * scale + 1e-7, err
""")


@pytest.fixture
def sharded_step():
  """``sharded_step(imports=..., config=..., batch=N, devices=D, parallel=M, after=code)``: runs the script in
  a process with D host devices; returns the finished process (assert its returncode)."""
  def run(*, imports, config, batch, devices, parallel, after=""):
    script = SHARDED.format(imports=imports, config=config, batch=batch, devices=devices, parallel=parallel)
    env = host_devices_env(devices, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script + textwrap.dedent(after)], env=env, capture_output=True,
                          text=True, timeout=300)
  return run


@pytest.fixture
def train_cli():
  """``train_cli(out, model, *flags)``: ``jaxbp train --model MODEL`` with a 1-layer width-16 model for one epoch
  of batch 16, plain learning rate, no plot, into ``out``; asserts it succeeds and returns its metrics.json."""
  def run(out, model, *flags):
    from jaxbp import cli  # pylint: disable=import-outside-toplevel
    status = cli.main(["train", "--model", model, "--layers", "1", "--width", "16", "--heads", "2", "--mlp-width",
                       "32", "--epochs", "1", "--batch-size", "16", "--lr", "1e-2", "--schedule", "constant",
                       "--no-plot", "--out", str(out), *flags])
    assert status == 0
    return json.loads((out / "metrics.json").read_text())
  return run
