"""Losses: values against hand computation, the hinge's kink, stability, and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def test_squared_error_is_the_notes_e_per_sample():
  pred, target = jnp.array([[1.0, 2.0], [3.0, 5.0]]), jnp.array([[0.0, 0.0], [3.0, 3.0]])
  chex.assert_trees_all_close(ops.squared_error(pred, target, reduction="none"), jnp.array([2.5, 2.0]))
  chex.assert_trees_all_close(ops.squared_error(pred, target), 2.25)
  chex.assert_trees_all_close(ops.squared_error(pred, target, reduction="sum"), 4.5)
  chex.assert_trees_all_close(jax.grad(ops.squared_error)(pred, target), (pred - target) / 2)


def test_mse_matches_torch_semantics():
  pred, target = jnp.array([[1.0, 2.0], [3.0, 5.0]]), jnp.zeros((2, 2))
  chex.assert_trees_all_close(ops.mse(pred, target), (1 + 4 + 9 + 25) / 4)
  chex.assert_trees_all_close(jax.grad(ops.mse)(pred, target), 2 * pred / 4)


def test_softmax_cross_entropy_finite_when_a_probability_underflows():
  logits = jnp.array([[0.0, 200.0, -200.0]], jnp.float32)  # softmax(logits)[0, 0] underflows to 0
  loss, vjp = jax.vjp(lambda z: ops.softmax_cross_entropy(z, jnp.array([0])), logits)
  (dz,) = vjp(jnp.float32(1.0))
  chex.assert_trees_all_close(loss, 200.0)
  chex.assert_trees_all_close(dz, jnp.array([[-1.0, 1.0, 0.0]]), atol=1e-6)


def test_softmax_cross_entropy_int_and_one_hot_labels_agree():
  rng = np.random.default_rng(0)
  logits, labels = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), jnp.array([0, 3, 1, 1, 2])
  onehot = jax.nn.one_hot(labels, 4)
  chex.assert_trees_all_close(ops.softmax_cross_entropy(logits, labels),
                              ops.softmax_cross_entropy(logits, onehot), rtol=1e-6)
  grad = jax.grad(ops.softmax_cross_entropy)(logits, labels)
  chex.assert_trees_all_close(grad, (jax.nn.softmax(logits) - onehot) / 5, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", [ops.softmax_cross_entropy, ops.multiclass_hinge])
def test_out_of_range_labels_give_nan_under_jit(op):
  loss = jax.jit(op, static_argnames="reduction")(jnp.zeros((3, 3)), jnp.array([0, 7, -1]), reduction="none")
  assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])


def test_multiclass_hinge_matches_note_001_and_takes_zero_at_the_kink():
  scores = jnp.array([[3.2, 5.1, -1.7]])  # CS231n's cat column, the correct class 0
  loss = ops.multiclass_hinge(scores, jnp.array([0]))
  chex.assert_trees_all_close(loss, 2.9, rtol=1e-6)  # max(0, 5.1-3.2+1) + max(0, -1.7-3.2+1)
  ds = jax.grad(ops.multiclass_hinge)(scores, jnp.array([0]))
  chex.assert_trees_all_close(ds, jnp.array([[-1.0, 1.0, 0.0]]))
  at_kink = jax.grad(ops.multiclass_hinge)(jnp.array([[1.0, 0.0]]), jnp.array([0]))  # 0 - 1 + 1 = 0
  chex.assert_trees_all_close(at_kink, jnp.zeros((1, 2)))


def test_l2_penalty_is_weight_decay():
  tree = {"w": jnp.array([1.0, -2.0]), "b": [jnp.array(3.0)]}
  chex.assert_trees_all_close(ops.l2_penalty(tree, 0.1), 0.05 * 14)
  chex.assert_trees_all_close(jax.grad(ops.l2_penalty)(tree, 0.1), jax.tree_util.tree_map(lambda w: 0.1 * w, tree))


def test_loss_errors_name_the_argument():
  z = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got \[3\]"):
    ops.softmax_cross_entropy(z, jnp.array([0, 3]))
  with pytest.raises(ValueError, match=r"integer labels must have shape \(2,\).*got \(2, 1\)"):
    ops.softmax_cross_entropy(z, jnp.array([[0], [1]]))
  with pytest.raises(ValueError, match=r"probability labels must have the logits' shape \(2, 3\), got \(2, 2\)"):
    ops.softmax_cross_entropy(z, jnp.zeros((2, 2)))
  with pytest.raises(TypeError, match=r"'labels' must be integer class indices, got dtype float32"):
    ops.multiclass_hinge(z, jnp.zeros(2))
  with pytest.raises(ValueError, match=r"'pred' and 'target' must have the same shape.*\(2, 1\) and \(2,\)"):
    ops.squared_error(jnp.zeros((2, 1)), jnp.zeros(2))
  with pytest.raises(ValueError, match=r"'reduction' must be one of \('mean', 'sum', 'none'\), got 'avg'"):
    ops.mse(z, z, reduction="avg")
  with pytest.raises(TypeError, match=r"l2_penalty: argument 'tree\['step'\]' must be a floating-point array"):
    ops.l2_penalty({"step": jnp.array(1)}, 0.1)
