"""rnn_lm / lstm_lm: shapes, the forget-gate bias, manual rules equal autodiff, the vanishing gradient per
time step of a plain RNN against the LSTM, and a short training run that learns a task."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.models import DataSpec
from jaxbp.models import recurrent
from jaxbp.train import tasks

TASK = tasks.make_task("reverse", length=4, num_train=64, num_test=8, seed=0)
BATCH = tuple(jnp.asarray(a) for a in tasks.language_model_arrays(TASK.train, TASK.answers))
SPEC = DataSpec("tokens", (TASK.seq_length - 1,), len(tasks.VOCAB), len(tasks.VOCAB))


def _model(config):
  params, state = recurrent._init(jax.random.key(0), config, SPEC)  # pylint: disable=protected-access
  return params, state, recurrent.network(config, SPEC)


def test_shapes_and_the_open_forget_gate():
  params, state, net = _model(recurrent.LSTM(hidden_size=6, num_layers=2, embed_size=5))
  assert state == {}
  chex.assert_shape([params["embed"], params["layers"][0]["w_x"], params["layers"][1]["w_x"],
                     params["layers"][1]["w_h"], params["out"]["w"]], [(13, 5), (5, 24), (6, 24), (6, 24), (6, 13)])
  np.testing.assert_array_equal(params["layers"][0]["b"][6:12], 1.0)  # f is the second block of four
  logits = jax.jit(recurrent.recurrent_apply, static_argnums=2)(params, BATCH[0], net)
  chex.assert_shape(logits, BATCH[0].shape + (13,))


@pytest.mark.parametrize("config", [recurrent.RNN(hidden_size=5), recurrent.LSTM(hidden_size=5)])
def test_manual_rules_give_autodiffs_gradients(config):
  params, _, net = _model(config)
  inputs, targets, mask = BATCH

  def loss(p, o):
    per = o.softmax_cross_entropy(recurrent.recurrent_apply(p, inputs, net, ops=o), targets, reduction="none")
    return jnp.sum(per * mask) / jnp.sum(mask)
  grad = jax.jit(jax.grad(loss), static_argnums=1)  # one compiled program each, not one per primitive
  manual, autodiff = grad(params, ops), grad(params, ops.reference)
  chex.assert_trees_all_close(manual, autodiff, rtol=2e-4, atol=1e-6)


def test_plain_rnn_gradient_vanishes_back_through_time_and_the_lstms_does_not():
  """Scored only at the last step: ‖∂L/∂x_t‖ at t = 1 against t = T (note 004's vanishing gradient)."""
  inputs, targets, mask = BATCH
  last_only = jnp.zeros_like(mask).at[:, -1].set(1.0)
  ratios = {}
  for config in (recurrent.RNN(hidden_size=8), recurrent.LSTM(hidden_size=8)):
    params, _, net = _model(config)
    norms = jax.jit(recurrent.input_grad_norms, static_argnums=2)(params, (inputs, targets, last_only), net)
    assert norms.shape == (inputs.shape[1],)
    ratios[net.cell] = float(norms[0] / norms[-1])
  assert ratios["rnn"] < 1e-3 < ratios["lstm"], ratios


def test_the_family_refuses_feature_data_and_bad_sizes():
  with pytest.raises(ValueError, match="lstm: needs token sequences"):
    recurrent.network(recurrent.LSTM(), DataSpec("features", (64,), 10))
  with pytest.raises(ValueError, match="RecurrentConfig.hidden must be a positive integer"):
    recurrent.check(recurrent.RNN(hidden_size=0))


def test_grad_flow_order_runs_from_the_embedding_to_the_output_layer():
  """``--grad-flow`` plots weight norms in pytree order, as layer 1 = input side: the keys must sort so."""
  from jaxbp.train import layer_grad_norms  # pylint: disable=import-outside-toplevel
  params, _, _ = _model(recurrent.RNN(hidden_size=3, num_layers=2, embed_size=2))
  assert list(layer_grad_norms(params)) == ["['embed']", "['layers'][0]['w_h']", "['layers'][0]['w_x']",
                                            "['layers'][1]['w_h']", "['layers'][1]['w_x']", "['out']['w']"]
