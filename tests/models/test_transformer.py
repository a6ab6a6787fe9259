"""The transformer: manual rules equal autodiff, and its sharded step (data × model) equals one device."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.models.transformer import TransformerConfig
from jaxbp.models.transformer import init_transformer
from jaxbp.models.transformer import transformer_apply
from jaxbp.models.transformer import transformer_head


def _loss(params, ids, targets, mask, config, op_namespace):
  hidden = transformer_apply(params, ids, config, ops=op_namespace)
  losses, _ = transformer_head(params, hidden, targets, op_namespace, chunk_size=16)
  return jnp.sum(losses * mask) / jnp.sum(mask)


def test_manual_rules_give_autodiffs_loss_and_gradients():
  """With layer_norm here; the sharded test below runs rms_norm."""
  config = TransformerConfig(layers=1, width=8, heads=2, mlp_width=16, norm="layer", block_size=4)
  params = init_transformer(jax.random.key(0), config, vocab_size=13, length=6, num_classes=13)
  rng = np.random.default_rng(0)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(3, 6)), jnp.int32) for _ in range(2))
  mask = jnp.asarray(np.arange(6) >= 3, jnp.float32) * jnp.ones((3, 1))
  step = jax.jit(jax.value_and_grad(_loss), static_argnums=(4, 5))
  manual = step(params, ids, targets, mask, config, ops)
  autodiff = step(params, ids, targets, mask, config, ops.reference)
  chex.assert_trees_all_close(manual, autodiff, rtol=2e-5, atol=2e-6)


SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxbp import ops
    from jaxbp.models.transformer import TransformerConfig, init_transformer, partition_specs
    from tests.models.test_transformer import _loss
    config = TransformerConfig(layers=1, width=16, heads=4, mlp_width=32, block_size=4)
    params = init_transformer(jax.random.key(1), config, vocab_size=13, length=8, num_classes=13)
    rng = np.random.default_rng(1)
    ids, targets = (jnp.asarray(rng.integers(0, 13, size=(8, 8)), jnp.int32) for _ in range(2))
    mask = jnp.ones((8, 8), jnp.float32)
    step = jax.jit(jax.value_and_grad(_loss), static_argnums=(4, 5))
    one = step(params, ids, targets, mask, config, ops)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    placed = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), partition_specs(params)))
    batch = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (ids, targets, mask)]
    many = step(placed, *batch, config, ops)
    assert placed["blocks"][0]["w1"].sharding.spec == P(None, "model")
    assert len(placed["blocks"][0]["w1"].addressable_shards[0].data.T) == 32 // 4
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(one))
    print("devices", jax.device_count(), "max error", err, "scale", scale)
    assert err <= 1e-5 * scale + 1e-7, err
""")


def test_sharded_step_over_data_and_model_axes_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "devices 8" in run.stdout
