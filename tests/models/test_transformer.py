"""The transformer: manual rules equal autodiff, and its sharded step (data × model) equals one device."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import models
from jaxbp import ops
from jaxbp import train
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


def test_trains_through_the_cli_and_autodiff_gives_the_same_curve(tmp_path, monkeypatch, capsys, train_cli):
  _tiny_task(monkeypatch)
  manual = train_cli(tmp_path / "manual", "transformer", "--task", "reverse")
  autodiff = train_cli(tmp_path / "autodiff", "transformer", "--task", "reverse", "--autodiff")
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


# Beside the shared step (tests/models/conftest.py): which weights are split, and a model axis that does not
# divide a split axis is one message before anything compiles.
TRANSFORMER_SPLIT = """
    w1 = many.params["blocks"][0]["w1"]
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    assert w1.sharding.spec == P(None, "model") and w1.addressable_shards[0].data.shape == (16, 32 // 4)
    assert many.params["embed"].sharding.spec == P()
    from jaxbp.train import tasks
    try:
      data = tasks.load_task("reverse", length=3, num_train=64, num_test=8)
      train.fit(config._replace(model=config.model._replace(mlp_width=30)), data, mesh=mesh)
      raise AssertionError("no error")
    except train.ConfigError as e:
      assert str(e).startswith("model_parallel 4 must divide axis 0 of the parameter ['blocks'][0]['b1'] (size 30)"), e
"""


def test_sharded_step_over_data_and_model_axes_equals_one_device(sharded_step):
  config = ("train.TrainConfig(model=Transformer(layers=1, width=16, heads=4, mlp_width=32, block_size=4),"
            " batch_size=8, model_parallel=4)")
  run = sharded_step(imports="from jaxbp.models.transformer import Transformer", config=config, batch=8, devices=8,
                     parallel=4, after=TRANSFORMER_SPLIT)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "devices 8" in run.stdout
