"""jaxbp.train: whole-model equivalence with autodiff, the optax pieces, non-finite stops, exact resume,
and data parallelism over four (forced) CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp import train
from jaxbp.check._sharded import host_devices_env
from jaxbp.models import MLP
from jaxbp.models import DataSpec
from jaxbp.models import Linear
import jaxbp.ops
from jaxbp.train import checkpoint
from jaxbp.train.data import Dataset


def _dataset(n=96, d=8, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 2, size=(classes, d))
  y = rng.integers(0, classes, size=n + 30)
  x = (centres[y] + rng.normal(0, 1, size=(n + 30, d))).astype(np.float32)
  return Dataset(x[:n], y[:n].astype(np.int32), x[n:], y[n:].astype(np.int32), tuple(range(classes)), "blobs")


SMALL = train.TrainConfig(model=MLP(hidden=(16,)), batch_size=16, epochs=3, lr=1e-2)
SPEC = DataSpec("features", (8,), 3)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_twenty_steps_on_manual_rules_equal_autodiff(optimizer):
  data = _dataset()
  config = SMALL._replace(optimizer=optimizer, model=MLP(hidden=(32, 32)), weight_decay=0.01)
  opt = train.make_optimizer(config, 20)
  start = train.init_state(config, SPEC, opt)
  finals = []
  for ops in (jaxbp.ops, jaxbp.ops.reference):
    step = train.make_train_step(train.make_loss_fn(config, SPEC, ops=ops), opt, donate=False)
    state = start
    for i in range(20):
      idx = np.arange(i * 16, i * 16 + 16) % 96
      state, metrics = step(state, (data.x_train[idx], data.y_train[idx]))
      assert bool(metrics["finite"])
    finals.append(state)
  chex.assert_trees_all_close(finals[0].params, finals[1].params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(finals[0].opt_state, finals[1].opt_state, rtol=1e-5, atol=1e-6)
  assert not np.allclose(finals[0].params["layers"][0]["w"], start.params["layers"][0]["w"])


@pytest.mark.parametrize("name", train.OPTIMIZERS)
def test_every_optimizer_descends(name):
  opt = train.make_optimizer(SMALL._replace(optimizer=name, lr=0.1), 10)
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
  loss = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))

  @jax.jit
  def run(params):
    state = opt.init(params)
    for _ in range(5):
      updates, state = opt.update(jax.grad(loss)(params), state, params)
      params = optax.apply_updates(params, updates)
    return params

  assert float(loss(run(params))) < 0.9 * float(loss(params))


def _one_update(config, grads, params):
  opt = train.make_optimizer(config, 100)
  updates, _ = opt.update(grads, opt.init(params), params)
  return updates


def test_weight_decay_touches_weights_only():
  params = {"layers": [{"w": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}]}
  zeros = jax.tree.map(jnp.zeros_like, params)
  u = _one_update(SMALL._replace(optimizer="sgd", lr=1.0, weight_decay=0.1), zeros, params)
  chex.assert_trees_all_close(u["layers"][0]["w"], jnp.full((2, 2), -0.2))  # coupled: -lr·wd·w
  chex.assert_trees_all_equal(u["layers"][0]["b"], jnp.zeros(2))
  u = _one_update(SMALL._replace(optimizer="adamw", lr=0.5, weight_decay=0.1), zeros, params)
  chex.assert_trees_all_close(u["layers"][0]["w"], jnp.full((2, 2), -0.1))  # decoupled: -lr·wd·w
  chex.assert_trees_all_equal(u["layers"][0]["b"], jnp.zeros(2))


def test_clip_and_accumulate():
  params = {"w": jnp.zeros(4)}
  u = _one_update(SMALL._replace(optimizer="sgd", lr=1.0, clip=1.0), {"w": jnp.full(4, 5.0)}, params)
  chex.assert_trees_all_close(optax.tree.norm(u), 1.0, rtol=1e-6)
  opt = train.make_optimizer(SMALL._replace(optimizer="sgd", lr=1.0, accumulate=2), 100)
  state = opt.init(params)
  u1, state = opt.update({"w": jnp.full(4, 1.0)}, state, params)
  u2, state = opt.update({"w": jnp.full(4, 3.0)}, state, params)
  chex.assert_trees_all_equal(u1["w"], jnp.zeros(4))
  chex.assert_trees_all_close(u2["w"], jnp.full(4, -2.0))


def test_schedules():
  values = lambda name: [float(train.make_schedule(SMALL._replace(schedule=name, lr=1.0), 100)(t))
                         for t in (0, 5, 10, 50, 100)]
  assert values("constant") == [1.0] * 5
  np.testing.assert_allclose(values("cosine"), [1.0, 0.99384, 0.97553, 0.5, 0.0], atol=1e-5)
  np.testing.assert_allclose(values("warmup"), [0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-6)
  w = values("warmup-cosine")
  assert w[0] == 0.0 and w[2] == pytest.approx(1.0) and w[4] == pytest.approx(0.0, abs=1e-6)


def test_fit_learns_with_hinge_l2_clip_accumulate():
  config = SMALL._replace(model=Linear(), loss="hinge", l2=1e-3, clip=1.0, accumulate=2, optimizer="momentum", lr=0.1,
                          epochs=4)
  result = train.fit(config, _dataset())
  assert result.history[-1]["test_accuracy"] > 0.9
  assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]


def test_non_finite_gradient_stops_with_step_and_checkpoint(tmp_path):
  data = _dataset()
  poison_row = 5

  def poison(record, state):
    if record["epoch"] == 1:
      data.x_train[poison_row, 0] = np.nan

  with pytest.raises(train.NonFiniteError) as e:
    train.fit(SMALL, data, out_dir=str(tmp_path), on_epoch=poison)
  order = train.epoch_order(SMALL.seed, 1, 96, 16)
  bad_step = 6 + int(np.argwhere(order == poison_row)[0, 0]) + 1
  message = str(e.value)
  assert f"step {bad_step} (epoch 2)" in message and "after epoch 1" in message and "checkpoint.npz" in message
  saved, meta = checkpoint.load(str(tmp_path / "checkpoint.npz"), jax.eval_shape(
      lambda: train.init_state(SMALL, SPEC, train.make_optimizer(SMALL, 18))))
  assert meta["epoch"] == 1
  chex.assert_tree_all_finite(saved.params)


def test_guarded_step_keeps_parameters_on_nan():
  config = SMALL
  opt = train.make_optimizer(config, 10)
  state = train.init_state(config, SPEC, opt)
  step = train.make_train_step(train.make_loss_fn(config, SPEC), opt, donate=False)
  x = np.full((16, 8), np.nan, np.float32)
  new, metrics = step(state, (x, np.zeros(16, np.int32)))
  assert not bool(metrics["finite"])
  chex.assert_trees_all_equal(new.params, state.params)
  assert int(new.step) == 1


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, shared_compiles):
  config = SMALL._replace(optimizer="adamw", schedule="cosine", model=MLP(hidden=(16,), dropout=0.2, batch_norm=True),
                          epochs=3)
  data = _dataset()
  full = train.fit(config, data, out_dir=str(tmp_path / "full"))

  def crash(record, state):
    if record["epoch"] == 1:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train.fit(config, data, out_dir=str(tmp_path / "cut"), on_epoch=crash)
  resumed = train.fit(config, data, out_dir=str(tmp_path / "cut"), resume=True)
  chex.assert_trees_all_equal(resumed.state, full.state)
  drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
  assert drop(resumed.history) == drop(full.history)
  with pytest.raises(ValueError, match=r"lr=0.01 \(now 0.5\)"):
    train.fit(config._replace(lr=0.5), data, out_dir=str(tmp_path / "cut"), resume=True)


def test_bad_batch_size_and_config():
  with pytest.raises(ValueError, match="larger than the 96 training examples"):
    train.fit(SMALL._replace(batch_size=200), _dataset())
  with pytest.raises(ValueError, match="optimizer must be one of"):
    train.check_config(SMALL._replace(optimizer="lion"))


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


def test_grad_flow_step_records_each_weight_gradients_norm():
  config = SMALL._replace(model=MLP(hidden=(16, 12), dropout=0.0), grad_flow=True)
  data = _dataset()
  opt = train.make_optimizer(config, 10)
  state = train.init_state(config, SPEC, opt)
  batch = (data.x_train[:16], data.y_train[:16])
  loss_fn = train.make_loss_fn(config, SPEC)
  _, metrics = train.make_train_step(loss_fn, opt, donate=False, grad_flow=True)(state, batch)
  _, subkey = jax.random.split(state.key)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, state.model_state, batch, subkey)[0]))(state.params)
  want = [np.linalg.norm(layer["w"]) for layer in grads["layers"]]  # input layer first, weights only
  chex.assert_trees_all_close(metrics["layer_grad_norms"], jnp.asarray(want), rtol=1e-5)
  # off by default: nothing added to the hot path (the step's outputs, traced: compiling adds nothing to that)
  _, plain = jax.eval_shape(train.make_train_step(loss_fn, opt, donate=False), state, batch)
  assert "layer_grad_norms" not in plain
  result = train.fit(config, data)
  assert all(len(r["layer_grad_norms"]) == 3 for r in result.history)


@pytest.mark.parametrize("doc, says, never", [
    ({"lr": "x"}, "missing field(s)", "unknown"),
    ({**train.TrainConfig().to_json(), "lrr": 1}, "unknown field(s) ['lrr']", "missing"),
])
def test_a_damaged_config_names_only_what_is_wrong(doc, says, never):
  with pytest.raises(ValueError) as err:
    train.TrainConfig.from_json(doc)
  assert says in str(err.value) and never not in str(err.value)
