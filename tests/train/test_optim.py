"""jaxbp.train.optim: every optimiser descends, decay touches weights only, clipping, accumulation and the
schedules, each measured on a tiny problem whose answer is known."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_loop import SMALL

from jaxbp import models
from jaxbp import train


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


def test_a_schedule_counts_updates_not_micro_batches():
  """With accumulate K, make_optimizer(config, num_steps) decays over num_steps / K updates: a cosine run of
  100 micro-batches at K = 4 reaches lr 0 at its 25th update (a schedule over 100 would still be near 0.85·lr)."""
  config = SMALL._replace(optimizer="sgd", lr=1.0, schedule="cosine", accumulate=4)
  opt = train.make_optimizer(config, 100)
  params = {"w": jnp.zeros(())}
  state = opt.init(params)
  grads = {"w": jnp.ones(())}
  update = jax.jit(opt.update)  # one compiled update, not each step's ops dispatched one by one
  sizes = []
  for _ in range(100):
    updates, state = update(grads, state, params)
    sizes.append(float(-updates["w"]))
  applied = [s for s in sizes if s]  # the micro-batches that close an update
  assert len(applied) == 25
  np.testing.assert_allclose(applied[0], 1.0, rtol=1e-6)   # the mean gradient 1 at the rate of update 0
  np.testing.assert_allclose(applied[12], float(optax.cosine_decay_schedule(1.0, 25)(12)), rtol=1e-6)
  assert applied[-1] < 0.01


def test_weights_are_the_leaves_with_two_or_more_axes_and_only_they_decay():
  """One meaning of "weight" (jaxbp.models.is_weight): decay reaches matrices and embeddings, whatever their
  names, and never a bias or a norm scale, even one named w."""
  params = {"embed": jnp.full((3, 2), 2.0), "w_out": jnp.full((2, 3), 2.0), "b": jnp.full((3,), 2.0),
            "norm": {"w": jnp.full((2,), 2.0)}}
  assert models.weights_mask(params) == {"embed": True, "w_out": True, "b": False, "norm": {"w": False}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  u = _one_update(SMALL._replace(optimizer="sgd", lr=1.0, weight_decay=0.1), zeros, params)
  assert {k: float(jnp.max(jnp.abs(v))) for k, v in {**u, "norm": u["norm"]["w"]}.items()} == pytest.approx(
      {"embed": 0.2, "w_out": 0.2, "b": 0.0, "norm": 0.0})
