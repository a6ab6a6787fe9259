"""Tests for ``jaxbp.check.check_vjp`` beyond single arrays: pytree inputs (named by parameter and path) and
pass-through arguments (keys, integers, Python scalars)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.check import check_vjp


def _draw(shape, dtype=np.float32, seed=0, low=-2.0, high=2.0):
  return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)


def _failures(excinfo):
  """The failed (check, input) pairs of the report attached to check_vjp's AssertionError."""
  return {(e.check, e.input) for e in excinfo.value.report.failures}


# --- pytrees in and out, pass-through arguments, options ---------------------------------------------------

def l2_penalty_ref(tree, lam):
  return lam / 2 * sum(jnp.sum(w ** 2) for w in jax.tree.leaves(tree))


@jax.custom_vjp
def l2_penalty_weights_only(tree, lam):
  return l2_penalty_ref(tree, lam)


def _l2_weights_only_bwd(res, g):
  tree, lam = res
  # planted: "decay weights, not biases" leaks into a rule whose formula covers every leaf
  dtree = jax.tree.map(lambda w: g * lam * w if w.ndim > 1 else jnp.zeros_like(w), tree)
  return dtree, g * sum(jnp.sum(w ** 2) for w in jax.tree.leaves(tree)) / 2


l2_penalty_weights_only.defvjp(lambda tree, lam: (l2_penalty_ref(tree, lam), (tree, lam)),
                               _l2_weights_only_bwd)


def test_pytree_input_is_named_by_parameter_and_path():
  tree = {"w1": _draw((3, 2), seed=1), "b1": _draw((2,), seed=2), "w2": _draw((2, 2), seed=3)}
  lam = np.float32(0.1)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(l2_penalty_weights_only, l2_penalty_ref, tree, lam)
  assert {label for _, label in _failures(excinfo)} == {"input 'tree' (args[0]['b1'])"}
  labels = {e.input for e in excinfo.value.report.entries if e.check == "vjp"}
  assert labels == {"input 'tree' (args[0]['b1'])", "input 'tree' (args[0]['w1'])",
                    "input 'tree' (args[0]['w2'])", "input 'lam' (args[1])"}


def dropout_ref(key, x, rate):
  keep = jax.random.bernoulli(key, 1 - rate, x.shape)
  return jnp.where(keep, x / (1 - rate), 0.0)


@jax.custom_vjp
def dropout(key, x, rate):
  return dropout_ref(key, x, rate)


def _dropout_fwd(key, x, rate):
  keep = jax.random.bernoulli(key, 1 - rate, x.shape)
  return jnp.where(keep, x / (1 - rate), 0.0), (keep, rate)


dropout.defvjp(_dropout_fwd, lambda res, g: (None, jnp.where(res[0], g / (1 - res[1]), 0.0), None))


def test_keys_integers_and_python_scalars_pass_through():
  key = jax.random.key(0, impl="rbg")  # a typed key; rbg because eager threefry is slow to compile
  report = check_vjp(dropout, dropout_ref, key, _draw((4, 5)), 0.5)
  outputs = {"output", "output (jax.vjp)"}
  assert {e.input for e in report.entries} == outputs | {"input 'x' (args[1])", "input 'key' (args[0])"}
  assert {e.check for e in report.entries if e.input == "input 'key' (args[0])"} == {"cotangents"}

  def take_rows(x, idx, *, scale):
    return scale * x[idx]
  report = check_vjp(take_rows, take_rows, _draw((5, 3)), np.array([0, 2, 2]), kwargs={"scale": 2.0})
  assert {e.input for e in report.entries} == outputs | {"input 'x' (args[0])", "input 'idx' (args[1])"}
