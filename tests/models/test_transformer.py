"""The transformer: manual rules equal autodiff, and its sharded step (data × model) equals one device."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import models
from jaxbp import ops
from jaxbp import train
from jaxbp.check._sharded import host_devices_env
from jaxbp.models.transformer import Transformer
from jaxbp.models.transformer import init_transformer
from jaxbp.models.transformer import transformer_apply
from jaxbp.models.transformer import transformer_head


def _loss(params, ids, targets, mask, config, op_namespace):
  hidden = transformer_apply(params, ids, config, ops=op_namespace)
  losses, _ = transformer_head(params, hidden, targets, op_namespace, chunk_size=16)
  return jnp.sum(losses * mask) / jnp.sum(mask)


def test_manual_rules_give_autodiffs_loss_and_gradients():
  """With layer_norm here; the sharded test below runs rms_norm."""
  config = Transformer(layers=1, width=8, heads=2, mlp_width=16, norm="layer", block_size=4)
  params = jax.jit(init_transformer, static_argnums=(1, 2, 3, 4))(jax.random.key(0), config, 13, 6, 13)
  rng = np.random.default_rng(0)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(3, 6)), jnp.int32) for _ in range(2))
  mask = jnp.asarray(np.arange(6) >= 3, jnp.float32) * jnp.ones((3, 1))
  step = jax.jit(jax.value_and_grad(_loss), static_argnums=(4, 5))
  manual = step(params, ids, targets, mask, config, ops)
  autodiff = step(params, ids, targets, mask, config, ops.reference)
  chex.assert_trees_all_close(manual, autodiff, rtol=2e-5, atol=2e-6)


def _tiny_task(monkeypatch):
  """``jaxbp train --task`` on 256 training sequences of length 3 (the CLI loads the task through this)."""
  from jaxbp.train import tasks  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(tasks, "load_task", functools.partial(tasks.load_task, length=3, num_train=256, num_test=64))


def _train(tmp_path, name, *flags):
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  status = cli.main(["train", "--model", "transformer", "--task", "reverse", "--layers", "1", "--width", "16",
                     "--heads", "2", "--mlp-width", "32", "--epochs", "1", "--batch-size", "16", "--lr", "1e-2",
                     "--schedule", "constant", "--no-plot",
                     "--out", str(tmp_path / name), *flags])
  assert status == 0
  return json.loads((tmp_path / name / "metrics.json").read_text())


def test_trains_through_the_cli_and_autodiff_gives_the_same_curve(tmp_path, monkeypatch, capsys):
  _tiny_task(monkeypatch)
  manual, autodiff = _train(tmp_path, "manual"), _train(tmp_path, "autodiff", "--autodiff")
  assert "transformer(layers=1, width=16" in capsys.readouterr().err
  assert manual["config"]["model"]["name"] == "transformer" and manual["config"]["autodiff"] is False
  assert manual["test_loss"][0] < 2.0  # ln(13) = 2.56 for a uniform guess: it learned in 16 steps
  np.testing.assert_allclose(manual["train_loss"], autodiff["train_loss"], rtol=1e-4)
  np.testing.assert_allclose(manual["test_loss"], autodiff["test_loss"], rtol=1e-4)


def test_first_step_loss_and_gradients_of_the_registered_family_equal_autodiffs():
  config = train.TrainConfig(model=Transformer(layers=1, width=8, heads=2, mlp_width=16, block_size=4))
  spec = models.DataSpec("tokens", (6,), 13, 13)
  params, state = models.get("transformer").init(jax.random.key(0), config.model, spec)
  rng = np.random.default_rng(2)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(3, 6)), jnp.int32) for _ in range(2))
  batch = (ids, targets, jnp.asarray(np.arange(6) >= 2, jnp.float32) * jnp.ones((3, 1)))
  grads = [jax.jit(jax.value_and_grad(train.make_loss_fn(c, spec), has_aux=True))(params, state, batch, None)
           for c in (config, config._replace(autodiff=True))]
  chex.assert_trees_all_close(grads[0], grads[1], rtol=2e-5, atol=2e-6)
  assert float(jnp.linalg.norm(grads[0][1]["w_out"])) > 0


@pytest.mark.parametrize("flags,message", [
    (["--model-parallel", "3"], "--model-parallel 3 must divide the 1 devices (the mesh is devices/N × N)"),
    (["--model", "mlp", "--model-parallel", "1", "--batch-size", "5000"],  # fit's checks, after the mesh's
     "--batch-size 5000 is larger than the 1438 training examples"),
    (["--model-parallel", "0"], "--model-parallel must be positive, got 0"),
])
def test_model_parallel_errors_are_one_line(flags, message, monkeypatch, capsys):
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(cli, "COMMANDS", {"train": cli.COMMANDS["train"]})
  model = [] if "--model" in flags else ["--model", "transformer", "--task", "reverse"]
  assert cli.main(["train", *model, *flags]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [f"jaxbp train: error: {message}"]


# The training step itself (make_train_step over make_mesh(8, 4), state placed by state_shardings) with
# SGD at lr 1: the update is minus the gradient, so equal new parameters are equal gradients.
SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxbp import models, train
    from jaxbp.train import tasks
    from jaxbp.models.transformer import Transformer
    config = train.TrainConfig(model=Transformer(layers=1, width=16, heads=4, mlp_width=32, block_size=4),
                               batch_size=8, model_parallel=4)
    spec = models.DataSpec("tokens", (8,), 13, 13)
    rng = np.random.default_rng(1)
    batch = tuple(jnp.asarray(rng.integers(0, 13, size=(8, 8)), jnp.int32) for _ in range(2))
    batch += (jnp.asarray(np.arange(8) >= 3, jnp.float32) * jnp.ones((8, 1)),)
    sgd = optax.sgd(1.0)
    state = train.init_state(config, spec, sgd)
    step = lambda **kw: train.make_train_step(train.make_loss_fn(config, spec), sgd, donate=False, **kw)
    one, m1 = step()(state, batch)
    mesh = train.make_mesh(8, 4)
    held = train.state_shardings(mesh, state, config.family)
    placed = train.place(state, held)
    many, m8 = step(mesh=mesh, state_sharding=held)(placed, train.place(batch, NamedSharding(mesh, P("data"))))
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    w1 = many.params["blocks"][0]["w1"]
    assert w1.sharding.spec == P(None, "model") and w1.addressable_shards[0].data.shape == (16, 32 // 4)
    assert many.params["embed"].sharding.spec == P()
    grad = lambda s: jax.tree.map(lambda new, old: old - new, s.params, state.params)
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grad(one)), jax.tree.leaves(grad(many))))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(grad(one)))
    print("devices", jax.device_count(), "loss", float(m1["loss"]), float(m8["loss"]), "max error", err, scale)
    assert abs(float(m1["loss"]) - float(m8["loss"])) <= 1e-6 * float(m1["loss"])
    assert err <= 1e-5 * scale + 1e-7, err
    try:  # a split axis that the model axis does not divide: one message, before anything compiles
      data = tasks.load_task("reverse", length=3, num_train=64, num_test=8)
      train.fit(config._replace(model=config.model._replace(mlp_width=30)), data, mesh=mesh)
      raise AssertionError("no error")
    except train.ConfigError as e:
      assert str(e).startswith("model_parallel 4 must divide axis 0 of the parameter ['blocks'][0]['b1'] (size 30)"), e
""")


def test_sharded_step_over_data_and_model_axes_equals_one_device():
  env = host_devices_env(8, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "devices 8" in run.stdout
