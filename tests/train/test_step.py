"""jaxbp.train.step: the jitted step on the manual rules equals autodiff's, a non-finite step changes no
parameter, the per-layer gradient norms, and the loss and metrics over scored positions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loop import SMALL
from test_loop import SPEC
from test_loop import _dataset

from jaxbp import train
from jaxbp.models import MLP
from jaxbp.models import DataSpec
from jaxbp.models import Linear
import jaxbp.ops
from jaxbp.train import step as step_lib


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


def test_an_update_that_overflows_is_not_applied():
  config = SMALL._replace(model=Linear(), optimizer="sgd", lr=3e38)
  spec = DataSpec("features", (8,), 3)
  opt = train.make_optimizer(config, 10)
  state = train.init_state(config, spec, opt)
  big = jax.tree_util.tree_map_with_path(lambda k, p: jnp.full_like(p, 3e38 if "b" in str(k) else 0.0), state.params)
  state = state._replace(params=big)  # logits 3e38 in every class: a finite loss; b − lr·db overflows
  step = train.make_train_step(train.make_loss_fn(config, spec), opt, donate=False)
  x = np.ones((16, 8), np.float32)
  new, metrics = step(state, (x, np.zeros(16, np.int32)))
  assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])  # the loss was fine, the update not
  chex.assert_trees_all_equal(new.params, state.params)


def test_masked_loss_is_the_mean_over_scored_positions_and_accuracy_is_exact_match():
  family = train.TrainConfig(model=jaxbp.models.LSTM()).family
  logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]],
                              [[0.2, 0.2, 0.6], [0.5, 0.25, 0.25], [0.6, 0.3, 0.1]]]))
  targets = jnp.array([[0, 1, 0], [2, 1, 0]])
  mask = jnp.array([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # position 0 is the prompt
  loss, metrics = step_lib.score(family, "cross-entropy", {}, logits, targets, mask, jaxbp.ops)
  scored = -np.log([0.8, 0.3, 0.25, 0.6])  # row 0: positions 1, 2; row 1: positions 1, 2
  np.testing.assert_allclose(float(loss), scored.mean(), rtol=1e-6)
  # row 0: position 2 predicts 2, the target is 0; row 1: position 1 predicts 0, the target is 1
  assert float(metrics["accuracy"]) == 0.0 and float(metrics["token_accuracy"]) == 0.5
  mask = mask.at[0, 2].set(0.0).at[1, 1].set(0.0)  # leave out the two wrong positions: both rows right
  assert float(step_lib.score(family, "cross-entropy", {}, logits, targets, mask, jaxbp.ops)[1]["accuracy"]) == 1.0


def test_data_spec_of_features_comes_from_the_shapes():
  data = _dataset(d=5, classes=4)
  assert train.data_spec(data) == DataSpec("features", (5,), 4)


def test_bfloat16_computes_the_model_in_bfloat16_and_keeps_float32_outside():
  """--dtype bfloat16: the activations are bfloat16 (the hidden layer's matmul output), the loss, the metrics
  and the gradients float32, the gradients within bfloat16's rounding of float32's; no test of accuracy
  here (docs/training.md has the transformer's run)."""
  data = _dataset()
  batch = (data.x_train[:16], data.y_train[:16])
  found = {}
  for dtype in ("float32", "bfloat16"):
    config = SMALL._replace(dtype=dtype)
    params = train.init_state(config, SPEC, train.make_optimizer(config, 1)).params
    loss_fn = train.make_loss_fn(config, SPEC)
    grad = jax.grad(lambda p, f=loss_fn: f(p, {}, batch, jax.random.key(0))[0])
    found[dtype] = loss_fn(params, {}, batch, jax.random.key(0)), grad(params)
    dtypes = {str(v.aval.dtype) for e in jax.make_jaxpr(grad)(params).jaxpr.eqns for v in e.outvars}
    assert ("bfloat16" in dtypes) == (dtype == "bfloat16")
  (loss, (_, metrics)), grads = found["bfloat16"]
  assert loss.dtype == jnp.float32 and all(m.dtype == jnp.float32 for m in metrics.values())
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  chex.assert_trees_all_close(grads, found["float32"][1], rtol=0.05, atol=2e-3)
  assert abs(float(loss) - float(found["float32"][0][0])) < 1e-2


def test_with_segment_ids_exact_match_counts_each_packed_example():
  family = train.TrainConfig(model=jaxbp.models.LSTM()).family
  targets = jnp.array([[1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 2]])
  predicted = targets.at[0, 3].set(0).at[1, 5].set(0)  # row 0's second example and row 1's second are wrong
  logits = jax.nn.one_hot(predicted, 3) * 5.0
  mask = jnp.array([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
  segments = jnp.array([[1, 1, 2, 2, 3, 3], [1, 1, 1, 2, 2, 2]])  # row 0's example 3 is unscored: not counted
  metrics = step_lib.score(family, "cross-entropy", {}, logits, targets, mask, jaxbp.ops, None, segments)[1]
  assert float(metrics["accuracy"]) == 0.5 and float(metrics["token_accuracy"]) == pytest.approx(0.8)
  assert float(step_lib.score(family, "cross-entropy", {}, logits, targets, mask, jaxbp.ops)[1]["accuracy"]) == 0.0
