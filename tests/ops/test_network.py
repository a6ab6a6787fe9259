"""A whole small network on the manual rules has the same gradients as jax.grad of the references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops


def _loss(p, x, y, ops):
  h = ops.relu(ops.linear(x, p["w1"], p["b1"]))
  return ops.softmax_cross_entropy(ops.linear(h, p["w2"], p["b2"]), y)


def test_two_layer_network_gradients_match_autodiff_under_jit():
  rng = np.random.default_rng(0)
  p = {"w1": rng.normal(size=(8, 16)) / 3, "b1": rng.normal(size=16), "w2": rng.normal(size=(16, 4)) / 4,
       "b2": rng.normal(size=4)}
  p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)
  x, y = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32), jnp.asarray(rng.integers(0, 4, 32))
  manual = jax.jit(jax.value_and_grad(lambda p: _loss(p, x, y, ops)))(p)
  auto = jax.jit(jax.value_and_grad(lambda p: _loss(p, x, y, ops.reference)))(p)
  chex.assert_trees_all_close(manual, auto, rtol=1e-5, atol=1e-6)
  chex.assert_tree_all_finite(manual)
