"""jaxbp.train.sharding: a data-parallel run equals one device's, the state's shardings follow the family's
partition specs, and a mesh that cannot hold the run is refused naming model_parallel."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from test_loop import SMALL

from jaxbp import models
from jaxbp import train
from jaxbp.check._sharded import host_devices_env
from jaxbp.train import sharding

_SHARDED = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from test_loop import SMALL, _dataset
    from jaxbp.models import MLP
    from jaxbp import train
    assert jax.device_count() == 4, jax.devices()
    config = SMALL._replace(model=MLP(hidden=(16,), batch_norm=True), optimizer="adam", epochs=2)
    one = train.fit(config, _dataset())
    mesh = train.make_mesh(4)
    four = train.fit(config, _dataset(), mesh=mesh)
    leaf = four.state.params["layers"][0]["w"]
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               zip(jax.tree.leaves(one.state.params), jax.tree.leaves(four.state.params)))
    print(json.dumps({"diff": diff, "devices": len(leaf.sharding.device_set),
                      "replicated": leaf.sharding.is_fully_replicated,
                      "acc": [one.history[-1]["test_accuracy"], four.history[-1]["test_accuracy"]]}))
""")


def test_data_parallel_step_equals_single_device():
  env = host_devices_env(4, TESTS_DIR=os.path.dirname(__file__))
  out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=240,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and result["replicated"]
  assert result["diff"] < 1e-5, result
  assert result["acc"][0] == result["acc"][1]


def _model_mesh():
  """A ("data", "model") mesh of shape (1, 1) on the one default device: the shardings' structure, no devices."""
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))


def test_state_shardings_split_the_parameters_and_their_moments_as_the_family_says():
  config = train.TrainConfig(model=models.Transformer(layers=1, width=8, heads=2, mlp_width=16, block_size=4))
  spec = models.DataSpec("tokens", (6,), 13, 13)
  opt = train.make_optimizer(config, 10)
  state = jax.eval_shape(lambda: train.init_state(config, spec, opt))
  held = sharding.state_shardings(_model_mesh(), state, config.family)
  want = config.family.partition_specs(state.params)
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
  got = jax.tree.map(lambda s: s.spec, held.params)
  assert jax.tree.leaves(got, is_leaf=is_spec) == jax.tree.leaves(want, is_leaf=is_spec)
  assert any(s != jax.sharding.PartitionSpec() for s in jax.tree.leaves(got, is_leaf=is_spec))  # some are split
  adam = held.opt_state[0]  # ScaleByAdamState: mu and nu shaped like the parameters, sharded like them
  assert jax.tree.map(lambda s: s.spec, adam.mu) == got and jax.tree.map(lambda s: s.spec, adam.nu) == got
  assert held.step.spec == held.key.spec == jax.sharding.PartitionSpec()


def test_a_mesh_without_the_model_axis_that_model_parallel_asks_for_is_refused():
  config = SMALL._replace(model=models.Transformer(), model_parallel=2)
  spec = models.DataSpec("tokens", (6,), 13, 13)
  with pytest.raises(train.ConfigError, match="2 needs a mesh whose 'model' axis has 2 devices") as e:
    sharding.check_mesh(config, spec, None)
  assert e.value.field == "model_parallel"
  with pytest.raises(train.ConfigError, match="must divide the 1 devices") as e:
    train.make_mesh(1, 2)
  assert e.value.field == "model_parallel"
  with pytest.raises(train.ConfigError, match="^num_devices must be between 1 and"):
    train.make_mesh(len(jax.devices()) + 1)
