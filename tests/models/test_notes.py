"""The notes' small models on the manual rules: note 002's exercises and note 000's closed form."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxbp import models
import jaxbp.ops


def _squared(ops, pred, y):
  d = ops.add(pred, -y)
  return ops.multiply(d, d)


@pytest.mark.parametrize("ops", [jaxbp.ops, jaxbp.ops.reference], ids=["manual", "reference"])
def test_note_002_exercises(ops):
  loss = lambda apply: lambda p, x, y: _squared(ops, apply(p, x, ops=ops), y)
  l31, g31 = jax.value_and_grad(loss(models.proportional_apply))({"w": 1.0}, 2.0, 4.0)
  assert (float(l31), float(g31["w"])) == (4.0, -8.0)
  l32, g32 = jax.value_and_grad(loss(models.affine_apply))({"w": 1.0, "b": 2.0}, 1.0, 2.0)
  assert (float(l32), float(g32["w"]), float(g32["b"])) == (1.0, 2.0, 2.0)
  p33 = {"w1": 2.0, "w2": 2.0, "b": 1.0}
  l33, g33 = jax.value_and_grad(loss(models.quadratic_apply))(p33, 2.0, 9.0)
  assert float(l33) == 16.0
  assert {k: float(v) for k, v in g33.items()} == {"w1": 32.0, "w2": 16.0, "b": 8.0}


def test_note_002_sgd_predicts_8_for_x_4():
  params = {"w": jnp.asarray(1.0)}
  grad = jax.jit(jax.grad(lambda p, x, y: _squared(jaxbp.ops, models.proportional_apply(p, x), y)))
  for _ in range(100):
    for x, y in zip([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]):
      params = {"w": params["w"] - 0.01 * grad(params, x, y)["w"]}
  assert abs(float(models.proportional_apply(params, 4.0)) - 8.0) < 1e-3


def test_note_000_neuron_gradient_is_the_closed_form():
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (1, 10))
  params = models.init_neuron(kw, 10)
  chex.assert_shape(params["w"], (10, 1))
  t = jnp.ones((1, 1))
  loss = lambda p: jaxbp.ops.squared_error(models.neuron_apply(p, x), t)
  g = jax.grad(loss)(params)["w"]
  o = jax.nn.sigmoid(x @ params["w"])
  chex.assert_trees_all_close(g, ((o - t) * o * (1 - o) * x).T, rtol=1e-6)


def test_inits_are_keyed_and_shaped():
  k, other = jax.random.split(jax.random.key(1))
  chex.assert_trees_all_equal(models.init_quadratic(k), models.init_quadratic(k))
  p, q = models.init_quadratic(k), models.init_quadratic(other)
  assert p["w1"] != q["w1"] and p["w1"] != p["w2"] and float(p["b"]) == 0.0  # drawn from the key, w1 ≠ w2
  assert models.init_neuron(k, 3)["w"].shape == (3, 1)
  assert set(models.init_quadratic(k)) == {"w1", "w2", "b"}
  assert set(models.init_affine(k)) == {"w", "b"} and models.init_proportional(k)["w"].shape == ()
