"""Activations: the documented choice at each kink, stability at extreme inputs, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _grad(f, x, **kw):
  return jax.grad(lambda x: jnp.sum(f(x, **kw)))(x)


def test_relu_takes_subgradient_zero_at_zero():
  chex.assert_trees_all_close(_grad(ops.relu, jnp.array([-1.0, 0.0, 1.0])), jnp.array([0.0, 0.0, 1.0]))


def test_leaky_relu_takes_the_negative_slope_at_zero():
  got = _grad(ops.leaky_relu, jnp.array([-1.0, 0.0, 1.0]), negative_slope=0.2)
  chex.assert_trees_all_close(got, jnp.array([0.2, 0.2, 1.0]))


def test_elu_takes_alpha_at_zero():
  got = _grad(ops.elu, jnp.array([-1.0, 0.0, 1.0]), alpha=0.5)
  chex.assert_trees_all_close(got, jnp.array([0.5 * np.exp(-1.0), 0.5, 1.0]), rtol=1e-6)


@pytest.mark.parametrize("x, value, grad", [(1000.0, 1.0, 0.0), (-1000.0, 0.0, 0.0), (0.0, 0.5, 0.25)])
def test_sigmoid_is_finite_and_exact_at_extremes(x, value, grad):
  assert ops.sigmoid(jnp.float32(x)) == value
  assert jax.grad(ops.sigmoid)(jnp.float32(x)) == grad


@pytest.mark.parametrize("x", [50.0, -50.0])
def test_tanh_saturates_with_zero_gradient(x):
  assert abs(ops.tanh(jnp.float32(x))) == 1.0
  assert jax.grad(ops.tanh)(jnp.float32(x)) == 0.0


@pytest.mark.parametrize("op", [ops.softmax, ops.log_softmax])
def test_softmax_family_is_finite_for_logits_near_1e4(op):
  x = jnp.array([[1e4, -1e4, 0.0], [1e4, 1e4 - 1.0, -1e4]])
  g = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
  y, vjp = jax.vjp(op, x)
  (dx,) = vjp(g)
  chex.assert_tree_all_finite((y, dx))
  # The same function of the logits shifted into a comfortable range: shift invariance.
  want_y, want_vjp = jax.vjp(op, x - jnp.max(x, axis=-1, keepdims=True))
  chex.assert_trees_all_close(y, want_y, atol=1e-6)
  chex.assert_trees_all_close(dx, want_vjp(g)[0], atol=1e-6)


def test_softmax_rows_sum_to_one_along_the_given_axis():
  x = jnp.arange(6.0).reshape(2, 3)
  chex.assert_trees_all_close(jnp.sum(ops.softmax(x, axis=0), axis=0), jnp.ones(3))
  chex.assert_trees_all_close(jnp.exp(ops.log_softmax(x, axis=0)), ops.softmax(x, axis=0))


def test_activations_reject_integers_and_bad_arguments():
  with pytest.raises(TypeError, match=r"sigmoid: argument 'x' must be a floating-point array, got dtype int32"):
    ops.sigmoid(jnp.arange(3, dtype=jnp.int32))
  with pytest.raises(ValueError, match=r"softmax: argument 'axis' must be an int in \[-2, 2\)"):
    ops.softmax(jnp.ones((2, 3)), axis=2)
  with pytest.raises(ValueError, match=r"elu: argument 'alpha' must be >= 0, got -1"):
    ops.elu(jnp.ones(3), alpha=-1.0)


def test_checks_cost_nothing_under_jit():
  """Validation reads static shapes and dtypes only, so a jitted op traces without error."""
  f = jax.jit(lambda x: ops.softmax(ops.relu(x), axis=0))
  chex.assert_shape(f(jnp.ones((4, 2))), (4, 2))
