"""Batch norm, layer norm and dropout: normalisation, the compact backward's identities, masks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _data(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(2.0, 3.0, size=shape), jnp.float32)


@pytest.mark.parametrize("shape", [(64, 3), (4, 5, 3, 3)])
def test_batch_norm_normalises_each_channel_over_every_other_axis(shape):
  """[N, C] over the batch; NHWC [N, H, W, C] over the batch and every position (spatial batch norm)."""
  x = _data(shape) * jnp.arange(1.0, 4.0)  # channels of different scales, so a per-axis mix-up shows
  y = ops.batch_norm(x, jnp.ones(3), jnp.zeros(3))
  axes = tuple(range(len(shape) - 1))
  chex.assert_trees_all_close(jnp.mean(y, axis=axes), jnp.zeros(3), atol=1e-5)
  chex.assert_trees_all_close(jnp.std(y, axis=axes), jnp.ones(3), atol=1e-3)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 2, 3)])
def test_batch_norm_gradients_equal_autodiff_of_the_reference(shape, x64):
  rng = np.random.default_rng(0)
  x, gamma, beta = rng.normal(size=shape), rng.normal(size=3), rng.normal(size=3)
  grads = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), (0, 1, 2)))(x, gamma, beta)
  chex.assert_trees_all_close(grads(ops.batch_norm), grads(ops.reference.batch_norm), rtol=1e-9)


def test_batch_norm_needs_a_channel_axis():
  with pytest.raises(ValueError, match=r"batch_norm: argument 'x' must be \[N, ..., C\] with at least 2 axes, "
                                       r"got shape \(4,\)"):
    ops.batch_norm(jnp.ones(4), jnp.ones(()), jnp.zeros(()))


@pytest.mark.parametrize("op, axis", [(ops.batch_norm, 0), (ops.layer_norm, -1)])
def test_normalised_input_gradient_is_orthogonal_to_shift_and_scale(op, axis):
  """y is invariant to shifting x along the normalised axis, so dx sums to 0 there (and ⟂ x̂)."""
  x, g = _data((8, 5)), _data((8, 5), seed=1)
  shape = (5,)
  dx = jax.jit(lambda x, g: jax.vjp(lambda x: op(x, jnp.ones(shape), jnp.zeros(shape), eps=0.0), x)[1](g)[0])(x, g)
  chex.assert_trees_all_close(jnp.sum(dx, axis=axis), jnp.zeros(dx.shape[1 - (axis % 2)]), atol=1e-4)


def test_norm_errors_name_gamma_shape():
  with pytest.raises(ValueError, match=r"batch_norm: argument 'gamma' must have shape \(3,\) "
                                       r"for x of shape \(4, 3\), got \(4,\)"):
    ops.batch_norm(jnp.ones((4, 3)), jnp.ones(4), jnp.zeros(3))
  with pytest.raises(ValueError, match=r"layer_norm: argument 'beta' must have shape \(3,\)"):
    ops.layer_norm(jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(4))


def test_dropout_reuses_its_mask_and_keeps_the_mean():
  key, x = jax.random.key(0), jnp.ones((200, 50))
  y, vjp = jax.vjp(lambda x: ops.dropout(key, x, 0.3), x)
  (dx,) = vjp(jnp.ones_like(x))
  chex.assert_trees_all_close(dx, y)  # g = 1: the gradient is the mask / (1 − rate), as y is
  np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
  assert abs(float(jnp.mean(y)) - 1.0) < 0.02
  chex.assert_trees_all_equal(ops.dropout(key, x, 0.3), y)  # same key, same mask


def test_dropout_rate_zero_is_identity_and_bad_rates_are_named():
  x = jnp.arange(3.0)
  assert ops.dropout(jax.random.key(0), x, 0.0) is x
  for rate in (1.0, -0.1, float("nan")):
    with pytest.raises(ValueError, match=r"dropout: argument 'rate' must be a number in \[0, 1\)"):
      ops.dropout(jax.random.key(0), x, rate)
  with pytest.raises(TypeError, match=r"dropout: argument 'rate' must be a real number, got str '0.5'"):
    ops.dropout(jax.random.key(0), x, "0.5")
