"""jaxbp.cost: XLA's FLOP and memory counts, and note 003's backward/forward claim."""

import jax
import jax.numpy as jnp
import pytest

from jaxbp import cost


def _mlp_loss(params, x, labels):
  h = x
  for w, b in params[:-1]:
    h = jax.nn.relu(h @ w + b)
  w, b = params[-1]
  logits = h @ w + b
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def _mlp(sizes, batch):
  params = [(jnp.ones((a, b)) / a, jnp.zeros(b)) for a, b in zip(sizes[:-1], sizes[1:])]
  x = jnp.ones((batch, sizes[0]))
  labels = jnp.zeros(batch, jnp.int32)
  return params, x, labels


@pytest.mark.parametrize("n,d,m", [(8, 16, 4), (32, 64, 128), (5, 7, 3)])
def test_matmul_forward_flops_are_2ndm(n, d, m):
  x, w = jnp.ones((n, d)), jnp.ones((d, m))
  assert cost.flops(jnp.matmul, x, w) == 2 * n * d * m


def test_compiled_cost_reports_sizes():
  x, w = jnp.ones((8, 16)), jnp.ones((16, 4))
  c = cost.compiled_cost(jnp.matmul, x, w)
  assert c.argument_bytes == (8 * 16 + 16 * 4) * 4
  assert c.output_bytes == 8 * 4 * 4
  assert c.bytes_accessed > 0


def test_temp_bytes_hold_the_activations_the_backward_needs():
  params, x, labels = _mlp([64, 256, 10], 32)
  # dW₂ = hᵀ·dY reads the hidden activation h [32, 256]: neither an argument nor an output of the
  # gradient, so it is a temporary buffer.
  assert cost.temp_bytes(jax.grad(_mlp_loss), params, x, labels) >= 32 * 256 * 4


def test_param_count_and_six_pd():
  params, _, _ = _mlp([64, 256, 10], 32)
  p = 64 * 256 + 256 + 256 * 10 + 10
  assert cost.param_count(params) == p
  assert cost.six_pd(params, 32) == 6 * p * 32


def test_backward_is_twice_forward_when_the_input_gradient_is_counted():
  params, x, labels = _mlp([256, 512, 512, 10], 64)
  counted = cost.backprop_cost(_mlp_loss, params, x, labels, wrt_input=True)
  assert counted.ratio == pytest.approx(2.0, abs=0.05)
  dropped = cost.backprop_cost(_mlp_loss, params, x, labels)
  # The first layer's dX (2·N·256·512 FLOPs) is not computed: the ratio falls below 2 by that much.
  first_dx = 2 * 64 * 256 * 512
  assert counted.backward_flops - dropped.backward_flops == pytest.approx(first_dx, rel=0.01)
  assert dropped.ratio < 1.9


def test_backprop_cost_is_close_to_the_notes_six_pd():
  params, x, labels = _mlp([256, 512, 512, 10], 64)
  c = cost.backprop_cost(_mlp_loss, params, x, labels, wrt_input=True)
  assert c.samples == 64
  assert c.params == cost.param_count(params)
  assert c.forward_flops == pytest.approx(2 * c.params * c.samples, rel=0.05)
  assert c.forward_flops + c.backward_flops == pytest.approx(c.six_pd, rel=0.05)


def test_backprop_cost_needs_a_batch():
  with pytest.raises(ValueError, match="batch"):
    cost.backprop_cost(lambda p: jnp.sum(p), jnp.ones(3))


def test_manual_rules_cost_the_same_flops_as_autodiff():
  from jaxbp import ops

  def manual_loss(params, x, labels):
    h = x
    for w, b in params[:-1]:
      h = ops.relu(ops.linear(h, w, b))
    return ops.softmax_cross_entropy(ops.linear(h, *params[-1]), labels)

  params, x, labels = _mlp([128, 256, 256, 10], 32)
  manual = cost.backprop_cost(manual_loss, params, x, labels, wrt_input=True)
  auto = cost.backprop_cost(_mlp_loss, params, x, labels, wrt_input=True)
  # The matmuls dominate and are identical; the element-wise work differs by a few FLOPs per element.
  assert manual.forward_flops == pytest.approx(auto.forward_flops, rel=0.01)
  assert manual.backward_flops == pytest.approx(auto.backward_flops, rel=0.01)
