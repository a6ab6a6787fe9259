"""The cnn family: shapes, its configuration errors, and its gradient under jit equal to autodiff's."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxbp import ops
from jaxbp.models import cnn

SMALL = cnn.CNN(channels=(3, 4), hidden=(5,), dropout=0.5)


def test_cnn_gradient_under_jit_equals_autodiff_of_the_references(x64):
  """The one-network test: conv2d, relu, max_pool2d, linear, dropout and the loss, all manual, in one
  jitted step, against jax.grad of the same network on ``ops.reference``."""
  params, _ = cnn.init_cnn(jax.random.key(0), SMALL, (64,), 10, dtype=jnp.float64)
  x = jax.random.normal(jax.random.key(1), (6, 64), jnp.float64)
  y = jnp.arange(6) % 10
  key = jax.random.key(2)

  def loss(params, namespace):
    logits = cnn.cnn_apply(params, x, SMALL, train=True, key=key, ops=namespace)
    return namespace.softmax_cross_entropy(logits, y)

  manual = jax.jit(jax.grad(lambda p: loss(p, ops)))(params)
  auto = jax.jit(jax.grad(lambda p: loss(p, ops.reference)))(params)
  chex.assert_trees_all_close(manual, auto, rtol=1e-9, atol=1e-12)
  assert float(jnp.abs(manual["convs"][0]["w"]).max()) > 0  # the gradient reaches the first kernel


def test_cnn_shapes_for_same_and_valid_padding():
  for padding, flat in (("SAME", 4 * 4 * 4), ("VALID", 2 * 2 * 4)):
    config = SMALL._replace(padding=padding)
    params, state = cnn.init_cnn(jax.random.key(0), config, (64,), 10)
    assert state == {}
    chex.assert_shape(params["convs"][1]["w"], (3, 3, 3, 4))
    chex.assert_shape(params["dense"][0]["w"], (flat, 5))
    chex.assert_shape(jax.jit(cnn.cnn_apply, static_argnums=2)(params, jnp.ones((2, 64)), config), (2, 10))


@pytest.mark.parametrize("config, input_shape, message", [
    (cnn.CNN(channels=()), (64,), "channels must name at least one"),
    (cnn.CNN(padding="FULL"), (64,), "padding must be one of"),
    (cnn.CNN(dropout=1.0), (64,), r"dropout must be in \[0, 1\)"),
    (cnn.CNN(hidden=(0,)), (64,), "hidden must be positive"),
    (cnn.CNN(), (10,), r"square grey images \[N, H·H\]"),
    (cnn.CNN(padding="VALID", channels=(4, 4, 4, 4)), (64,), "too small"),
])
def test_cnn_rejects_configs_it_cannot_build(config, input_shape, message):
  with pytest.raises(ValueError, match=message):
    cnn.init_cnn(jax.random.key(0), config, input_shape, 10)


def test_cnn_apply_needs_a_key_for_dropout():
  params, _ = cnn.init_cnn(jax.random.key(0), SMALL, (64,), 10)
  with pytest.raises(ValueError, match="needs a PRNG 'key'"):
    cnn.cnn_apply(params, jnp.ones((2, 64)), SMALL, train=True)


def test_cnn_is_a_registered_family_that_trains_from_the_registry():
  from jaxbp import models
  family = models.get("cnn")
  spec = models.DataSpec("features", (64,), 10)
  params, state = family.init(jax.random.key(0), family.config(channels=(4,), hidden=(8,)), spec)
  logits, _ = family.apply(params, state, jnp.ones((3, 64)), family.config(channels=(4,), hidden=(8,)), spec,
                           train=False, key=None, ops=ops)
  assert logits.shape == (3, 10)
  assert "cnn" in models.names()


def test_grad_flow_lists_every_weight_from_the_input_side_to_the_logits():
  """``--grad-flow`` plots ``layer_grad_norms`` in pytree order as layers 1, 2, …: that order must be the
  network's (convs, then dense), one entry per kernel or matrix, biases left out."""
  from jaxbp.train import layer_grad_norms  # pylint: disable=import-outside-toplevel
  params, _ = cnn.init_cnn(jax.random.key(0), SMALL, (64,), 10)
  norms = layer_grad_norms(params)
  assert list(norms) == ["['convs'][0]['w']", "['convs'][1]['w']", "['dense'][0]['w']", "['dense'][1]['w']"]
  chex.assert_trees_all_close(norms["['convs'][1]['w']"], jnp.sqrt(jnp.sum(params["convs"][1]["w"] ** 2)))
