"""The llama family: manual rules equal autodiff (every option on), segment ids isolate packed examples,
it trains through the CLI with autodiff's loss curve, and its sharded step equals one device's."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import models
from jaxbp import ops
from jaxbp import train
from jaxbp.models.llama import Llama
from jaxbp.models.llama import check
from jaxbp.models.llama import init_llama
from jaxbp.models.llama import llama_apply
from jaxbp.models.llama import llama_head

EVERY_OPTION = Llama(layers=1, width=16, heads=4, kv_heads=2, mlp_width=24, window=3, softcap=5.0, z_loss=1e-2,
                     label_smoothing=0.1, logit_softcap=4.0, block_size=4)


def _loss(params, ids, targets, mask, segment_ids, config, op_namespace):
  hidden = llama_apply(params, ids, config, ops=op_namespace, segment_ids=segment_ids)
  losses, _ = llama_head(params, hidden, targets, config, op_namespace, chunk_size=16)
  return jnp.sum(losses * mask) / jnp.sum(mask)


def _batch(seed=0, n=3, t=10):
  rng = np.random.default_rng(seed)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(n, t)), jnp.int32) for _ in range(2))
  mask = jnp.asarray(np.arange(t) >= 3, jnp.float32) * jnp.ones((n, 1))
  segments = jnp.asarray(np.repeat([[1, 2, 3]], [4, 3, t - 7], axis=1).repeat(n, axis=0), jnp.int32)
  return ids, targets, mask, segments


@pytest.mark.parametrize("config", [EVERY_OPTION, Llama(layers=2, width=8, heads=2, kv_heads=1, mlp_width=8,
                                                        block_size=4)], ids=["every-option", "multi-query"])
def test_manual_rules_give_autodiffs_loss_and_gradients(config):
  params = jax.jit(init_llama, static_argnums=(1, 2, 3))(jax.random.key(0), config, 13, 13)
  step = jax.jit(jax.value_and_grad(_loss), static_argnums=(5, 6))
  manual = step(*(params, *_batch()), config, ops)
  autodiff = step(*(params, *_batch()), config, ops.reference)
  chex.assert_trees_all_close(manual, autodiff, rtol=2e-5, atol=2e-6)
  assert all(float(jnp.linalg.norm(g)) > 0 for g in jax.tree.leaves(manual[1]))  # every parameter is reached


def test_segment_ids_keep_packed_examples_apart():
  """Changing segment 1's tokens leaves segments 2 and 3's hidden states unchanged only with segment ids."""
  config = EVERY_OPTION._replace(window=0)
  params = init_llama(jax.random.key(1), config, 13, 13)
  ids, _, _, segments = _batch(1)
  other = ids.at[:, :4].set((ids[:, :4] + 1) % 13)
  run = jax.jit(lambda i, s: llama_apply(params, i, config, ops=ops, segment_ids=s))
  np.testing.assert_array_equal(run(ids, segments)[:, 4:], run(other, segments)[:, 4:])
  assert float(jnp.max(jnp.abs(run(ids, None)[:, 4:] - run(other, None)[:, 4:]))) > 1e-3


@pytest.mark.parametrize("field,value,message", [
    ("kv_heads", 3, r"kv_heads \(3\) must divide heads \(4\)"),
    ("width", 12, r"head width \(RoPE rotates pairs\); got head width 3"),
    ("window", -1, "window must be >= 0"),
    ("softcap", 0.0, "softcap must be > 0"),
    ("label_smoothing", 1.5, r"label_smoothing must be in \[0, 1\]"),
])
def test_check_names_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    check(Llama()._replace(**{field: value}))


def _tiny(monkeypatch, name="reverse", **sizes):
  from jaxbp.train import tasks  # pylint: disable=import-outside-toplevel
  sizes = sizes or {"length": 3, "num_train": 256, "num_test": 64}
  monkeypatch.setattr(tasks, "load_task", functools.partial(tasks.load_task, **sizes))


LLAMA_FLAGS = ("--kv-heads", "1", "--z-loss", "1e-3")


def test_trains_through_the_cli_and_autodiff_gives_the_same_curve(tmp_path, monkeypatch, capsys, train_cli):
  _tiny(monkeypatch)
  manual = train_cli(tmp_path / "manual", "llama", "--task", "reverse", *LLAMA_FLAGS)
  autodiff = train_cli(tmp_path / "autodiff", "llama", "--task", "reverse", *LLAMA_FLAGS, "--autodiff")
  assert "llama(layers=1, width=16, heads=2, kv_heads=1" in capsys.readouterr().err
  assert manual["config"]["model"]["name"] == "llama" and manual["config"]["model"]["config"]["z_loss"] == 1e-3
  assert manual["test_loss"][0] < 2.3  # ln(13) = 2.56 for a uniform guess: it learned in 16 steps
  np.testing.assert_allclose(manual["train_loss"], autodiff["train_loss"], rtol=1e-4)
  np.testing.assert_allclose(manual["test_loss"], autodiff["test_loss"], rtol=1e-4)


def test_packed_task_trains_with_segment_ids_and_other_families_refuse_it(tmp_path, monkeypatch, capsys, train_cli):
  _tiny(monkeypatch, length=5, num_train=1200, num_test=64)
  record = train_cli(tmp_path / "packed", "llama", "--task", "packed", *LLAMA_FLAGS)
  assert record["test_loss"][0] < 2.4  # ln(13) = 2.56: it learned in the 17 steps of 16 rows
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  capsys.readouterr()
  assert cli.main(["train", "--model", "transformer", "--task", "packed", "--out", str(tmp_path / "t")]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "jaxbp train: error: --model transformer does not take segment ids, which the packed rows of task packed"
      " (length 5, seed 0) need; use llama")


def test_sharded_step_over_data_and_model_axes_equals_one_device(sharded_step):
  config = ("train.TrainConfig(model=Llama(layers=1, width=16, heads=4, kv_heads=2, mlp_width=32, block_size=4),"
            " batch_size=4, model_parallel=2)")
  split = """
    w = many.params["blocks"][0]["w_gate_up"]
    assert w.sharding.spec == P(None, "model") and w.addressable_shards[0].data.shape == (16, 64 // 2)
  """
  run = sharded_step(imports="from jaxbp.models.llama import Llama", config=config, batch=4, devices=4, parallel=2,
                     after=split)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "devices 4" in run.stdout


def test_registered_with_segments_and_its_defaults():
  family = models.get("llama")
  assert family.segments and not models.get("transformer").segments
  assert family.config is Llama and family.partition_specs is not None
  assert train.TrainConfig(model=Llama()).family is family
