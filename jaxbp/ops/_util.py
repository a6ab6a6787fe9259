"""Shared pieces of the rules: input validation, the batch reduction and the broadcast-sum of cotangents."""

import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def unbroadcast(g, shape, dtype=None):
  """Sums cotangent ``g`` over the axes NumPy broadcasting added or stretched, back to ``shape``.

  If ``x`` of shape ``shape`` was broadcast to ``g.shape`` in the forward pass, every copy of an element
  received its own upstream gradient; the chain rule adds them (note 001: the add gate distributes, and
  a fan-out sums). This is the one place the project does that sum. With ``dtype``, the result is cast
  to it, so an input keeps its own dtype when the forward promoted it.
  """
  shape = tuple(shape)
  if g.shape != shape:
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    g = jnp.sum(g, axis=axes).reshape(shape)
  return g if dtype is None else g.astype(dtype)


def require_float(op, name, x):
  """Raises TypeError unless ``x`` is a floating-point array (or Python float)."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise TypeError(
        f"{op}: argument '{name}' must be a floating-point array, got dtype {dtype}"
        f" (cast it first, e.g. {name}.astype(jnp.float32))")


def require_floats(op, **arrays):
  for name, x in arrays.items():
    require_float(op, name, x)


def broadcast_shape(op, **arrays):
  """The broadcast shape of the arrays, or a ValueError that names them and their shapes."""
  shapes = {name: jnp.shape(x) for name, x in arrays.items()}
  try:
    return np.broadcast_shapes(*shapes.values())
  except ValueError:
    got = ", ".join(f"{n} {s}" for n, s in shapes.items())
    raise ValueError(f"{op}: shapes do not broadcast together: {got}") from None


def require_reduction(op, reduction):
  if reduction not in REDUCTIONS:
    raise ValueError(f"{op}: argument 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_batch(per_sample, reduction):
  """Applies ``reduction`` ("mean", "sum" or "none") over the batch axis of per-sample losses."""
  if reduction == "none":
    return per_sample
  total = jnp.sum(per_sample)
  return total / max(per_sample.size, 1) if reduction == "mean" else total
