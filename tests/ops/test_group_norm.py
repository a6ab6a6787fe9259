"""group_norm: statistics per sample and group, the limits groups = 1 and C, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


@pytest.mark.parametrize("shape, groups", [((2, 3, 3, 4), 2), ((3, 6), 3), ((2, 2, 4), 1), ((2, 2, 2, 4), 4)])
def test_group_norm_gradients_equal_autodiff(shape, groups, x64):
  rng = np.random.default_rng(0)
  x, gamma, beta = rng.normal(size=shape), rng.normal(size=shape[-1]), rng.normal(size=shape[-1])
  # jitted: one compiled program per rule instead of one dispatch (and compilation) per primitive
  loss = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a, groups))), (0, 1, 2)))(x, gamma, beta)
  chex.assert_trees_all_close(loss(ops.group_norm), loss(ops.reference.group_norm), rtol=1e-9)


def test_group_norm_normalises_each_sample_and_group_on_its_own():
  x = jnp.arange(2 * 2 * 2 * 4, dtype=jnp.float32).reshape(2, 2, 2, 4) ** 1.5
  y = ops.group_norm(x, jnp.ones(4), jnp.zeros(4), groups=2).reshape(2, 4, 2, 2)
  chex.assert_trees_all_close(jnp.mean(y, axis=(1, 3)), jnp.zeros((2, 2)), atol=1e-5)
  chex.assert_trees_all_close(jnp.var(y, axis=(1, 3)), jnp.ones((2, 2)), atol=1e-3)


def test_group_norm_rejects_bad_arguments():
  x = jnp.ones((2, 3, 6))
  with pytest.raises(ValueError, match=r"'groups' must be an int >= 1 dividing C = 6, got 4"):
    ops.group_norm(x, jnp.ones(6), jnp.zeros(6), 4)
  with pytest.raises(ValueError, match=r"'gamma' must have shape \(6,\)"):
    ops.group_norm(x, jnp.ones(3), jnp.zeros(6), 2)
  with pytest.raises(ValueError, match=r"'x' must be \[N, ..., C\]"):
    ops.group_norm(jnp.ones(6), jnp.ones(6), jnp.zeros(6), 2)
