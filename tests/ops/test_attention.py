"""attention: JAX's own attention, every block geometry, fully masked rows, O(T) memory, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_vjp


def _qkv(b, t, s, h, d, seed=0, dv=None):
  rng = np.random.default_rng(seed)
  q, k = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for n in (t, s))
  v = jnp.asarray(rng.normal(size=(b, s, h, dv or d)), jnp.float32)
  return q, k, v


def _grads(f, q, k, v, g, **kw):
  """Output and VJP, jitted: one compiled program instead of one eager compilation per primitive."""
  def run(q, k, v, g):
    out, vjp = jax.vjp(lambda q, k, v: f(q, k, v, **kw), q, k, v)
    return (out,) + vjp(g)
  return jax.jit(run)(q, k, v, g)


@pytest.mark.parametrize("t, s, causal, block", [(7, 5, True, 3), (5, 9, True, 64), (6, 6, False, 4)])
def test_attention_equals_jax_dot_product_attention_for_every_block_size(t, s, causal, block):
  """Same output as jax.nn.dot_product_attention (top-left causal), and the same output and gradients
  as the reference whether blocks do not divide T or S, or one block holds everything."""
  q, k, v = _qkv(2, t, s, 2, 4)
  want = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  g = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
  expected = _grads(ops.reference.attention, q, k, v, g, causal=causal)
  chex.assert_trees_all_close(expected[0], want, atol=1e-5)
  got = _grads(ops.attention, q, k, v, g, causal=causal, block_size=block)
  chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fully_masked_row_outputs_zero_and_passes_no_gradient():
  q, k, v = _qkv(1, 4, 6, 1, 3)
  mask = np.ones((4, 6), bool)
  mask[2] = False  # query 2 may see no key
  g = jnp.ones((1, 4, 1, 3))
  out, dq, dk, dv = _grads(ops.attention, q, k, v, g, mask=mask, block_size=4)
  chex.assert_trees_all_equal(out[0, 2], jnp.zeros((1, 3)))
  chex.assert_trees_all_equal(dq[0, 2], jnp.zeros((1, 3)))
  # k and v get exactly what the other three rows give them: the masked row adds nothing
  rows = np.array([0, 1, 3])
  others = _grads(ops.attention, q[:, rows], k, v, g[:, rows], mask=mask[rows], block_size=4)
  chex.assert_trees_all_close((dk, dv), others[2:], atol=1e-6)
  assert bool(jnp.all(jnp.isfinite(dq)))


def test_value_width_may_differ_and_mask_broadcasts():
  q, k, v = _qkv(2, 3, 5, 2, 4, dv=6)
  mask = np.random.default_rng(2).random((2, 1, 1, 5)) < 0.6
  mask[:, :, :, 0] = True
  check_vjp(ops.attention, ops.reference.attention, q, k, v,
            kwargs={"mask": mask, "causal": True, "block_size": 2}, checks=["forward", "vjp"])


def _temp_bytes(f, *args):
  return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_training_step_memory_is_linear_in_t_not_quadratic():
  """Compiled temporary memory of value_and_grad: the rule's holds no [T, T] matrix, autodiff's does."""
  sizes = {}
  for t in (256, 512):
    q, k, v = _qkv(1, t, t, 2, 16)
    for name, f in (("manual", ops.attention), ("autodiff", ops.reference.attention)):
      loss = lambda q, k, v, f=f: jnp.sum(f(q, k, v, causal=True, block_size=64) ** 2)
      sizes[name, t] = _temp_bytes(jax.grad(loss, argnums=(0, 1, 2)), q, k, v)
  t_by_t = 2 * 512 * 512 * 4  # one float32 [heads, T, T] matrix at T = 512
  assert sizes["manual", 512] < t_by_t / 4 < sizes["autodiff", 512]
  assert sizes["manual", 512] < 2.5 * sizes["manual", 256]      # about 2x for 2x T
  assert sizes["autodiff", 512] > 3.5 * sizes["autodiff", 256]  # about 4x for 2x T


def test_attention_errors_name_the_argument():
  q, k, v = _qkv(1, 3, 4, 2, 5)
  cases = [
      ((q[0], k, v), {}, ValueError, r"attention: argument 'q' must be \[B, length, heads, dim\]"),
      ((q, k[:, :, :1], v), {}, ValueError, r"attention: shapes do not fit"),
      ((q, k, v.astype(jnp.float16)), {}, TypeError, r"attention: q, k and v must share one dtype"),
      ((q, k, v), {"mask": np.ones((3, 4), np.int32)}, TypeError, r"argument 'mask' must be a boolean"),
      ((q, k, v), {"mask": np.ones((3, 3), bool)}, ValueError, r"argument 'mask' of shape \(3, 3\)"),
      ((q, k, v), {"block_size": 0}, ValueError, r"argument 'block_size' must be a Python int >= 1"),
      ((q, k, v), {"causal": 1}, TypeError, r"argument 'causal' must be a bool"),
      ((q, k, jnp.ones((1, 4, 2, 5), jnp.int32)), {}, TypeError, r"attention: argument 'v'"),
  ]
  for args, kw, err, msg in cases:
    with pytest.raises(err, match=msg):
      ops.attention(*args, **kw)
