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
    {"window": 3, "stride": 3, "padding": ((1, 2), (2, 0))},
    {"window": (7, 8)},
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


def _first_winner_grad(x, g, window, stride, pads):
  """dx of max pooling by brute force over windows: each window's g goes to its first NaN, else to its
  first maximum, in row-major order; padding never wins."""
  dx = np.zeros_like(x)
  (kh, kw), (sh, sw), ((lo_h, _), (lo_w, _)) = window, stride, pads
  for n, i, j, c in np.ndindex(*g.shape):
    cells = [(p, q) for p in range(i * sh - lo_h, i * sh - lo_h + kh) for q in range(j * sw - lo_w, j * sw - lo_w + kw)
             if 0 <= p < x.shape[1] and 0 <= q < x.shape[2]]
    values = np.array([x[n, p, q, c] for p, q in cells])
    best = int(np.argmax(np.isnan(values))) if np.isnan(values).any() else int(np.argmax(values))
    dx[(n, *cells[best], c)] += g[n, i, j, c]
  return dx


def _max_pool_vjp(x, g, **kwargs):
  """y and dx of max_pool2d for the cotangent g, jitted."""
  def both(x, g):
    y, pull = jax.vjp(lambda x: ops.max_pool2d(x, **kwargs), x)
    return y, pull(g)[0]
  return jax.jit(both)(x, g)


# The last item names the rule's path for that geometry (max_pool2d's docstring): non-overlapping tiles,
# strided views for overlapping windows up to 4×4, reduce_window beyond.
@pytest.mark.parametrize("window, stride, pads, path", [
    ((2, 2), (2, 2), ((0, 0), (0, 0)), "tiles"), ((3, 2), (4, 2), ((1, 1), (1, 0)), "tiles"),
    ((7, 7), (7, 7), ((0, 0), (0, 0)), "tiles"), ((3, 3), (1, 1), ((1, 1), (1, 1)), "views"),
    ((2, 4), (1, 3), ((1, 0), (0, 2)), "views"), ((5, 5), (2, 2), ((2, 2), (2, 2)), "reduce"),
    ((6, 3), (1, 2), ((0, 3), (2, 0)), "reduce"),
], ids=str)
def test_max_pool_routes_like_brute_force_with_ties_nans_and_infinities(window, stride, pads, path, x64):
  del path  # in the test's id only
  rng = np.random.default_rng(0)
  x = rng.integers(-2, 3, size=(2, 7, 7, 3)).astype(np.float64)  # five values: ties in every window
  x[rng.random(x.shape) < 0.08] = np.nan
  x[rng.random(x.shape) < 0.15] = -np.inf
  y_shape = jax.eval_shape(lambda x: ops.reference.max_pool2d(x, window, stride, pads), x).shape
  g = rng.normal(size=y_shape)
  y, dx = _max_pool_vjp(x, g, window=window, stride=stride, padding=pads)
  chex.assert_trees_all_close(y, ops.reference.max_pool2d(x, window, stride, pads))  # NaN where NaN
  chex.assert_trees_all_close(dx, _first_winner_grad(x, g, window, stride, pads), rtol=1e-12)


def _program_lines(k, stride):
  x = jnp.ones((1, k, k, 2))
  grad = jax.grad(lambda x: jnp.sum(ops.max_pool2d(x, window=k if stride is None else k - 2, stride=stride)))
  return len(jax.jit(grad).lower(x).as_text().splitlines())


@pytest.mark.parametrize("stride", [None, 1], ids=["global", "overlapping (K − 2)×(K − 2) stride 1"])
def test_max_pool_program_does_not_grow_with_the_window(stride):
  # The rule once compared K_h·K_w strided views: a global 16×16 pool's gradient took 34 s to compile
  # and a 32×32 one over 13 minutes. Its program must be the same size for any window: here a 12×12
  # and a 24×24 image (both windows' offsets fit one dtype), pooled whole or by windows 2 pixels smaller.
  assert _program_lines(12, stride) == _program_lines(24, stride)


@pytest.mark.parametrize("kwargs", [{}, {"stride": 1, "padding": "SAME"}], ids=["tiles", "overlapping"])
def test_max_pool_nan_is_the_maximum_and_takes_the_gradient(kwargs):
  x = jnp.array([[1.0, jnp.nan, 0.0, 4.0],
                 [jnp.nan, 3.0, 5.0, 2.0]]).reshape(1, 2, 4, 1)
  y_shape = jax.eval_shape(lambda x: ops.max_pool2d(x, **kwargs), x).shape
  y, dx = _max_pool_vjp(x, jnp.arange(1.0, 1.0 + np.prod(y_shape)).reshape(y_shape), **kwargs)
  if not kwargs:  # window 1 holds two NaNs: the first (row-major) takes its g whole; window 2 has none
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 0] == 5.0
    want = [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]
  else:  # a 2×2 window at every pixel (padded after): each window over a NaN sends its g to its first NaN
    want = [[0.0, 1.0 + 2.0, 0.0, 4.0], [5.0, 0.0, 6.0 + 7.0 + 3.0, 8.0]]
  chex.assert_trees_all_close(dx[0, :, :, 0], jnp.array(want))


@pytest.mark.parametrize("kwargs", [{"window": 3, "stride": 3}, {"window": 2, "stride": 1}],
                         ids=["tiles", "overlapping"])
def test_max_pool_padding_never_wins_even_against_minus_infinity(kwargs):
  # A window of real −∞ and padding (also −∞): its gradient goes to the first real pixel, not lost.
  x = jnp.full((1, 2, 2, 1), -jnp.inf)
  dx = jax.jit(jax.grad(lambda x: jnp.sum(ops.max_pool2d(x, padding=((1, 0), (1, 0)), **kwargs))))(x)
  windows = 1 if kwargs["stride"] == 3 else 4  # every window holds pixel (0, 0), its first real one
  chex.assert_trees_all_close(dx[0, :, :, 0], jnp.array([[windows, 0.0], [0.0, 0.0]]))


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


def test_max_pool_with_large_overlapping_windows_refuses_an_input_its_int32_winners_cannot_index():
  huge = jax.ShapeDtypeStruct((2**15, 256, 256, 2), jnp.float32)  # 2³² elements, never allocated
  assert jax.eval_shape(lambda x: ops.max_pool2d(x), huge).shape == (2**15, 128, 128, 2)  # tiles: no index
  with pytest.raises(ValueError, match=r"max_pool2d: argument 'x' must have fewer than 2\*\*31 elements with"):
    jax.eval_shape(lambda x: ops.max_pool2d(x, window=5, stride=1), huge)
