"""matmul and linear: note 001's matrix backward on shapes N, D, M all different, and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def test_matmul_backward_is_dy_wt_and_xt_dy():
  rng = np.random.default_rng(0)
  x, w, g = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(2, 3), (3, 5), (2, 5)])
  _, vjp = jax.vjp(ops.matmul, x, w)
  dx, dw = vjp(g)
  chex.assert_shape((dx, dw), [(2, 3), (3, 5)])
  chex.assert_trees_all_close(dx, g @ w.T, rtol=1e-6)
  chex.assert_trees_all_close(dw, x.T @ g, rtol=1e-6)


def test_linear_flattens_leading_axes_and_sums_the_bias_gradient():
  rng = np.random.default_rng(1)
  x, w, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(4, 2, 3), (3, 5), (5,)])
  g = jnp.asarray(rng.normal(size=(4, 2, 5)), jnp.float32)
  _, vjp = jax.vjp(ops.linear, x, w, b)
  dx, dw, db = vjp(g)
  chex.assert_trees_all_close(dw, jnp.einsum("abd,abm->dm", x, g), rtol=1e-5)
  chex.assert_trees_all_close(db, g.sum(axis=(0, 1)), rtol=1e-6)
  chex.assert_shape(dx, x.shape)


def test_matmul_errors_name_the_shapes():
  with pytest.raises(ValueError, match=r"inner dimensions differ: x has shape \(3, 4\).*w has shape \(5, 2\)"):
    ops.matmul(jnp.ones((3, 4)), jnp.ones((5, 2)))
  with pytest.raises(ValueError, match=r"argument 'w' must be a matrix \[D, M\], got shape \(4,\)"):
    ops.matmul(jnp.ones((3, 4)), jnp.ones(4))
  with pytest.raises(ValueError, match=r"argument 'b' must have shape \(2,\).*got \(3,\)"):
    ops.linear(jnp.ones((3, 4)), jnp.ones((4, 2)), jnp.ones(3))
  with pytest.raises(TypeError, match=r"matmul: argument 'x' must be a floating-point array, got dtype int32"):
    ops.matmul(jnp.ones((3, 4), jnp.int32), jnp.ones((4, 2)))


@pytest.mark.parametrize("op, params", [
    (ops.linear, lambda: (jnp.ones((3, 4), jnp.float32), jnp.ones(4, jnp.float64))),
    (ops.batch_norm, lambda: (jnp.ones(3, jnp.float64), jnp.zeros(3, jnp.float32))),
    (ops.layer_norm, lambda: (jnp.ones(3, jnp.float32), jnp.zeros(3, jnp.float64))),
])
def test_each_cotangent_keeps_its_inputs_dtype(x64, op, params):
  """A float64 bias beside float32 weights gets a float64 gradient, not one cast to the weights' dtype."""
  x = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
  args = (x, *params())
  grads = jax.grad(lambda *a: jnp.sum(op(*a) ** 2), argnums=(0, 1, 2))(*args)
  assert [g.dtype for g in grads] == [a.dtype for a in args]
