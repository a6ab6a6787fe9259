"""max_pool2d and avg_pool2d: the tie choice, every window/stride/padding branch, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops

CASES = [
    {},
    {"window": 3, "stride": 1},
    {"window": (2, 3), "stride": (1, 2), "padding": "SAME"},
    {"window": 3, "stride": 2, "padding": ((2, 1), (0, 2))},
    {"window": 2, "stride": 3},
]


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pool_gradients_equal_autodiff_on_every_branch(name, kwargs, x64):
  x = np.random.default_rng(1).normal(size=(2, 7, 8, 3))
  fn, ref = getattr(ops, name), getattr(ops.reference, name)
  grad = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(f(x, **kwargs)))))(x)
  chex.assert_trees_all_close(fn(x, **kwargs), ref(x, **kwargs))
  chex.assert_trees_all_close(grad(fn), grad(ref), rtol=1e-10)


def test_max_pool_tie_goes_whole_to_the_first_maximum_in_row_major_order():
  x = jnp.array([[3.0, 1.0, 0.0, 2.0],
                 [3.0, 3.0, 2.0, 2.0]]).reshape(1, 2, 4, 1)
  dx = jax.grad(lambda x: jnp.sum(ops.max_pool2d(x) * jnp.array([5.0, 7.0]).reshape(1, 1, 2, 1)))(x)
  want = jnp.array([[5.0, 0.0, 0.0, 7.0],   # window 1: three 3s, the top-left one wins
                    [0.0, 0.0, 0.0, 0.0]])  # window 2: three 2s, the top-right one (first in its row)
  chex.assert_trees_all_close(dx[0, :, :, 0], want)


def test_max_pool_overlapping_windows_sum_at_a_shared_winner():
  x = jnp.array([0.0, 5.0, 1.0, 0.0]).reshape(1, 1, 4, 1)
  dx = jax.grad(lambda x: jnp.sum(ops.max_pool2d(x, window=(1, 3), stride=1)))(x)
  chex.assert_trees_all_close(dx[0, 0, :, 0], jnp.array([0.0, 2.0, 0.0, 0.0]))


def test_avg_pool_shares_equally_and_counts_padding_in_the_divisor():
  x = jnp.ones((1, 3, 3, 1))
  y = ops.avg_pool2d(x, window=2, stride=2, padding="SAME")  # pads one row and column at the end
  chex.assert_trees_all_close(y[0, :, :, 0], jnp.array([[1.0, 0.5], [0.5, 0.25]]))
  dx = jax.grad(lambda x: jnp.sum(ops.avg_pool2d(x, window=2, stride=1)))(x)
  chex.assert_trees_all_close(dx[0, :, :, 0], jnp.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0)


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_pools_reject_bad_arguments(name):
  pool = getattr(ops, name)
  with pytest.raises(ValueError, match=rf"{name}: argument 'x' must be \[N, H, W, C\]"):
    pool(jnp.ones((4, 4)))
  with pytest.raises(ValueError, match=r"argument 'window' must be an int >= 1"):
    pool(jnp.ones((1, 4, 4, 1)), window=0)
  with pytest.raises(ValueError, match=r"argument 'stride'"):
    pool(jnp.ones((1, 4, 4, 1)), stride=(1, 2, 3))
  with pytest.raises(ValueError, match=r"'padding' must be smaller than the window"):
    pool(jnp.ones((1, 4, 4, 1)), padding=((2, 0), (0, 0)))
  with pytest.raises(ValueError, match=r"does not fit"):
    pool(jnp.ones((1, 1, 4, 1)), window=2)
  with pytest.raises(TypeError, match=r"argument 'x' must be a floating-point array"):
    pool(jnp.ones((1, 4, 4, 1), jnp.int32))
