"""embedding: the scatter-add backward (a repeated id accumulates), out-of-range ids, bad arguments."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def test_repeated_id_accumulates_and_unused_rows_get_zero():
  table = jnp.arange(8.0, dtype=jnp.float32).reshape(4, 2)
  ids = jnp.array([[1, 3], [1, 1]])
  g = jnp.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], jnp.float32)
  out, vjp = jax.vjp(lambda t: ops.embedding(ids, t), table)
  chex.assert_trees_all_equal(out, table[ids])
  (dtable,) = vjp(g)
  want = np.zeros((4, 2), np.float32)
  want[1] = [1 + 5 + 7, 2 + 6 + 8]  # id 1 used three times: the three upstream rows summed
  want[3] = [3, 4]
  chex.assert_trees_all_equal(dtable, want)


def test_out_of_range_ids_are_refused_when_concrete():
  table = jnp.ones((3, 2))
  for bad in ([0, 3], [-1, 0]):
    with pytest.raises(ValueError, match=r"embedding: ids must lie in \[0, 3\)"):
      ops.embedding(jnp.array(bad), table)


def test_out_of_range_ids_under_jit_give_nan_rows_and_no_gradient():
  table = jnp.arange(6.0, dtype=jnp.float32).reshape(3, 2)
  ids = jnp.array([2, 3, -1, 2])
  out = jax.jit(ops.embedding)(ids, table)
  assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
  chex.assert_trees_all_equal(out[0], table[2])
  _, vjp = jax.vjp(lambda t: jax.jit(ops.embedding)(ids, t), table)
  (dtable,) = vjp(jnp.ones((4, 2), jnp.float32))  # the invalid positions' upstream rows are not zero
  chex.assert_trees_all_equal(dtable, jnp.array([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]))


def test_bad_arguments_name_the_argument():
  with pytest.raises(TypeError, match="argument 'ids' must be an integer array"):
    ops.embedding(jnp.array([0.0, 1.0]), jnp.ones((3, 2)))
  with pytest.raises(ValueError, match=r"argument 'table' must be a matrix \[V, D\], got shape \(3,\)"):
    ops.embedding(jnp.array([0]), jnp.ones(3))
  with pytest.raises(TypeError, match="argument 'table' must be a floating-point array"):
    ops.embedding(jnp.array([0]), jnp.ones((3, 2), jnp.int32))
