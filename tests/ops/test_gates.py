"""The gates of note 001: values, broadcast sums, max's tie, and bad input."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxbp import ops


def test_add_distributes_and_sums_over_broadcast_axes():
  x, y = jnp.ones((3, 4)), jnp.arange(4.0)
  g = jnp.arange(12.0).reshape(3, 4)
  _, vjp = jax.vjp(ops.add, x, y)
  dx, dy = vjp(g)
  chex.assert_trees_all_close(dx, g)
  chex.assert_trees_all_close(dy, g.sum(axis=0))


def test_add_sums_over_stretched_unit_axes():
  x, y = jnp.ones((3, 1)), jnp.ones((1, 4))
  dx, dy = jax.grad(lambda x, y: jnp.sum(ops.add(x, y) * jnp.arange(12.0).reshape(3, 4)), (0, 1))(x, y)
  chex.assert_trees_all_close(dx, jnp.arange(12.0).reshape(3, 4).sum(1, keepdims=True))
  chex.assert_trees_all_close(dy, jnp.arange(12.0).reshape(3, 4).sum(0, keepdims=True))


def test_multiply_swaps_its_inputs():
  dx, dy = jax.grad(ops.multiply, (0, 1))(3.0, -2.0)
  assert (dx, dy) == (-2.0, 3.0)


def test_maximum_routes_to_the_larger_input_and_to_y_at_a_tie():
  x, y = jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 1.0, 2.0])
  dx, dy = jax.grad(lambda x, y: jnp.sum(ops.maximum(x, y)), (0, 1))(x, y)
  chex.assert_trees_all_close(dx, jnp.array([1.0, 0.0, 0.0]))
  chex.assert_trees_all_close(dy, jnp.array([0.0, 1.0, 1.0]))  # the tie: routed whole, never split


@pytest.mark.parametrize("op", [ops.add, ops.multiply, ops.maximum])
def test_gates_reject_integers_and_mismatched_shapes(op):
  with pytest.raises(TypeError, match=r"argument 'y' must be a floating-point array, got dtype int32"):
    op(jnp.ones(3), jnp.arange(3, dtype=jnp.int32))
  with pytest.raises(ValueError, match=r"shapes do not broadcast together: x \(3,\), y \(4,\)"):
    op(jnp.ones(3), jnp.ones(4))
