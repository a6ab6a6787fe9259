"""Embedding lookup (the first layer of every sequence model): rows of a table picked by integer ids.

A lookup is a matmul with a one-hot matrix, E[ids] = onehot(ids)·E, so its backward is that matmul's
dW = onehot(ids)ᵀ·dY (note 001, section 2) without ever building the one-hot: a scatter-add of each
upstream row into the row of the table it came from. An id used twice receives both gradients summed
(note 001: a fan-out sums its gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_array
from jaxbp.ops._util import int_array


def _check_ids(op, ids, table):
  """Validates integer ``ids`` against ``table`` [V, D]; refuses out-of-range ids when concrete."""
  t_shape = table.shape
  if len(t_shape) != 2:
    raise ValueError(f"{op}: argument 'table' must be a matrix [V, D], got shape {t_shape}")
  if not isinstance(ids, jax.core.Tracer):
    values = np.asarray(ids)
    bad = (values < 0) | (values >= t_shape[0])
    if bad.any():
      raise ValueError(f"{op}: ids must lie in [0, {t_shape[0]}) (the table's rows), got "
                       f"{values[bad].ravel()[:5]} (first of {int(bad.sum())} out of range)")


# ----------------------------------------------------------------------------------------- embedding

def embedding(ids: jax.typing.ArrayLike, table: jax.typing.ArrayLike) -> jax.Array:
  """Y = E[ids]: row ``ids[...]`` of the table for every id.  (Note 001, section 2.)

  Forward: y_{...,d} = E_{ids[...], d}, i.e. Y = onehot(ids)·E with the one-hot never built.
  Local Jacobian: ∂y_{k,d}/∂E_{v,d'} = 1[ids_k = v]·1[d = d'], so the VJP is
  dE = onehot(ids)ᵀ·dY: dE_v = Σ_{k : ids_k = v} g_k, a scatter-add. A repeated id accumulates the
  gradients of all its uses; a row no id picked gets 0. The ids get no gradient (they are integers).
  The rule keeps the ids; the table's values are not needed by the backward (only its shape).

  Out-of-range ids (< 0 or ≥ V) raise ValueError when concrete; under ``jit``, where their values
  cannot be seen, such a position's output row is NaN (as ``softmax_cross_entropy`` does with its
  labels: a NaN loss stops training where a silently clamped row would not) and it sends no gradient
  to the table.

  Args:
    ids: int array of any shape [...], values in [0, V).
    table: float array [V, D].

  Returns:
    Array [..., D] of the table's dtype.
  """
  ids, table = int_array("embedding", "ids", ids), float_array("embedding", "table", table)
  _check_ids("embedding", ids, table)
  return _embedding(ids, table)


def _embedding_fwd(ids, table):
  # One gather: an id outside [0, V) reads the fill value NaN (negative ids too: JAX would wrap them).
  out = jnp.take(table, jnp.where(ids < 0, table.shape[0], ids), axis=0, mode="fill", fill_value=jnp.nan)
  return out, (ids, table)  # the ids; the table (a parameter, no new buffer) for its shape and dtype


def _embedding_bwd(res, g):
  ids, table = res
  rows = g.astype(table.dtype).reshape(ids.size, table.shape[1])
  # One scatter-add: repeated ids accumulate; an id outside [0, V) is dropped (sends no gradient).
  dtable = jnp.zeros_like(table).at[ids.reshape(-1)].add(rows, mode="drop", wrap_negative_indices=False)
  return None, dtable


def _embedding_ref(ids, table):
  return table[ids]


def _embedding_sampler(ids_shape, width=None, vocab=None):
  """Ids of ``ids_shape`` into a table [V, D]; a small V (1..4 unless given), so the ids repeat."""
  def sample(rng, dtype):
    v = vocab or int(rng.integers(1, 5))
    d = int(rng.integers(1, 5)) if width is None else width
    ids = rng.integers(0, v, size=ids_shape).astype(np.int32)
    return (ids, uniform(rng, (v, d), dtype)), {}
  return sample


_EMBEDDING = {
    "ids a scalar": _embedding_sampler(()),
    "ids a vector": _embedding_sampler((6,)),
    "ids [N, T], repeated": _embedding_sampler((3, 5), vocab=2),
    "one row, V = 1": _embedding_sampler((2, 3), vocab=1),
    "no ids": _embedding_sampler((2, 0)),
    "D = 0": _embedding_sampler((4,), width=0),
}


_embedding = vjp_rule(embedding, _embedding_fwd, _embedding_bwd)
register(embedding, _embedding_ref, any_branch(_EMBEDDING), branches=_EMBEDDING, note="001")
