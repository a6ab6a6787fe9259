"""conv2d: the hand-checkable case, every stride/padding/dilation branch against autodiff, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops

# Every branch of the geometry: strides that leave input rows unread, SAME, explicit pads larger
# than the kernel, dilations, and a bias or none.
CASES = [
    {},
    {"stride": 2},
    {"stride": (2, 3), "padding": "SAME"},
    {"dilation": 2, "padding": ((1, 0), (0, 2))},
    {"stride": 3, "dilation": (2, 1), "padding": ((2, 3), (0, 1))},
    {"stride": 2, "padding": ((4, 4), (0, 0))},
]


def _grads(conv, x, w, b, kwargs):
  loss = lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b, **kwargs)))
  return jax.jit(jax.grad(loss, (0, 1, 2)))(x, w, b)


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_conv2d_gradients_equal_autodiff_on_every_branch(kwargs, x64):
  rng = np.random.default_rng(0)
  x, w, b = rng.normal(size=(2, 9, 8, 3)), rng.normal(size=(3, 2, 3, 4)), rng.normal(size=(4,))
  chex.assert_trees_all_close(ops.conv2d(x, w, b, **kwargs), ops.reference.conv2d(x, w, b, **kwargs))
  chex.assert_trees_all_close(_grads(ops.conv2d, x, w, b, kwargs),
                              _grads(ops.reference.conv2d, x, w, b, kwargs), rtol=1e-10)


def test_conv2d_dx_and_dw_by_hand():
  """A 4×4 input 0..15 and a 2×2 kernel of ones: dx counts the windows each pixel is in, and
  dw[kh, kw] sums x over the 3×3 positions tap (kh, kw) reads."""
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  w = jnp.ones((2, 2, 1, 1))
  dx, dw = jax.grad(lambda x, w: jnp.sum(ops.conv2d(x, w)), (0, 1))(x, w)
  windows = jnp.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]], jnp.float32)
  chex.assert_trees_all_close(dx[0, :, :, 0], windows)
  img = np.arange(16.0).reshape(4, 4)
  want = np.array([[img[i:i + 3, j:j + 3].sum() for j in range(2)] for i in range(2)])
  chex.assert_trees_all_close(dw[:, :, 0, 0], jnp.asarray(want, jnp.float32))


def test_conv2d_without_bias_has_no_bias_gradient():
  x, w = jnp.ones((1, 3, 3, 2)), jnp.ones((2, 2, 2, 5))
  dx, dw = jax.grad(lambda x, w: jnp.sum(ops.conv2d(x, w, stride=2)), (0, 1))(x, w)
  chex.assert_shape(dx, x.shape)
  chex.assert_shape(dw, w.shape)
  assert float(dx[0, 2, 2, 0]) == 0.0  # the last row and column are past the only window: unread


@pytest.mark.parametrize("call, message", [
    (lambda: ops.conv2d(jnp.ones((3, 3, 1)), jnp.ones((1, 1, 1, 1))), r"'x' must be \[N, H, W, C\]"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 2)), jnp.ones((1, 1, 3, 1))), r"'w' must be .* C = 2"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 4)), jnp.ones(3)), r"'b' must have shape \(4,\)"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 1)), stride=0), r"'stride' must be an int >= 1"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 1)), dilation=(1,)), r"'dilation'"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 1)), padding="FULL"), r"'padding' must be"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 1)), padding=((1, -1), (0, 0))), r"'padding'"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((4, 4, 1, 1))), r"does not fit"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1), jnp.int32), jnp.ones((1, 1, 1, 1))), r"'x' must be a floating"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 2)), jnp.ones((0, 2, 2, 3))), r"'w' must be .* KH, KW >= 1"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 2)), jnp.ones((2, 0, 2, 3))), r"'w' must be .* KH, KW >= 1"),
    (lambda: ops.conv2d(jnp.ones((1, 3, 3, 1)), jnp.ones((1, 1, 1, 1), jnp.bfloat16)),
     r"'w' must have the dtype of 'x' \(float32\), got bfloat16"),
])
def test_conv2d_rejects_bad_arguments(call, message):
  with pytest.raises((ValueError, TypeError), match=message):
    call()


def test_conv2d_names_w_when_its_dtype_is_not_xs(x64):
  # lax.conv_general_dilated raised its own "requires arguments to have the same dtypes" traceback.
  x, w = jnp.ones((1, 3, 3, 1), jnp.float32), jnp.ones((1, 1, 1, 1), jnp.float64)
  with pytest.raises(TypeError, match=r"conv2d: argument 'w' must have the dtype of 'x' \(float32\), got float64"):
    jax.jit(jax.grad(lambda x, w: jnp.sum(ops.conv2d(x, w)), (0, 1)))(x, w)
