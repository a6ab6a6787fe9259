"""Shared pieces of the rules: input validation, the batch reduction and the broadcast-sum of cotangents.

Validation, the one idiom every op uses before its rule runs (errors name the op, the argument and what
was wrong, at trace time, reading only static shapes and dtypes):

* ``float_array(op, name, x)``: ``x`` as a ``jax.Array`` of a real floating-point dtype (NumPy arrays,
  NumPy scalars and Python floats are converted; complex, integer, bool, lists, ``None`` and strings are
  refused with a ``TypeError``).
* ``int_array(op, name, x)``: the same for integer arrays (class labels, ids).
* ``static_number(op, name, value, low=..., high=...)``: a hyperparameter the rule treats as a Python
  constant (``eps``, ``margin``, ``alpha``, ``rate``): a finite real number in a range; a value traced
  under ``jit`` is refused with how to pass it instead.
* ``class_labels(op, scores, labels, allow_probabilities)``: integer class indices in range (or
  probabilities of the scores' shape).
* ``broadcastable_floats(op, x=x, y=y)``: float arrays that broadcast together (a binary gate's inputs).
* ``same_shape(op, pred, target)``: a loss's prediction and target of one shape.
* ``same_dtype(op, x=x, w=w)``: arrays of one dtype, where the lax primitive requires it (conv2d).
* ``axis_index(op, name, axis, shape)``: an int axis (not a bool) in ``[-ndim, ndim)``, made non-negative.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, int, float)


def _what(x: Any) -> str:
  """How an error message describes a value that is not an array of the right kind."""
  if isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return f"dtype {x.dtype}"
  if x is None or isinstance(x, (bool, complex, str, list, tuple, dict)):
    return f"{type(x).__name__} {x!r}"[:80]
  return f"an object of type {type(x).__name__}"


def _array(op: str, name: str, x: Any, kind: type, noun: str, hint: str) -> jax.Array:
  if isinstance(x, bool) or not isinstance(x, _ARRAY_TYPES):
    raise TypeError(f"{op}: argument '{name}' must be {noun}, got {_what(x)}")
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, kind):
    raise TypeError(f"{op}: argument '{name}' must be {noun}, got dtype {dtype}{hint}")
  return jnp.asarray(x)


def float_array(op: str, name: str, x: Any) -> jax.Array:
  """``x`` as a real floating-point ``jax.Array``, or a TypeError naming ``op``, ``name`` and what ``x`` is."""
  hint = f" (cast it first, e.g. {name}.astype(jnp.float32))"
  if isinstance(x, (jax.Array, np.ndarray, np.generic, complex)) and jnp.iscomplexobj(x):
    hint = " (the rules are written for real inputs: pass x.real, or split real and imaginary parts)"
  return _array(op, name, x, jnp.floating, "a floating-point array", hint)


def int_array(op: str, name: str, x: Any) -> jax.Array:
  """``x`` as an integer ``jax.Array``, or a TypeError naming ``op``, ``name`` and what ``x`` is."""
  return _array(op, name, x, jnp.integer, "an integer array", "")


def float_arrays(op: str, **arrays: Any) -> tuple[jax.Array, ...]:
  """``float_array`` of each keyword argument, in order."""
  return tuple(float_array(op, name, x) for name, x in arrays.items())


def static_number(op: str, name: str, value: Any, low: float | None = None,
                  high: float | None = None) -> float:
  """``value`` as a Python float in ``[low, high)`` (either bound optional), or a clear error.

  The rules take hyperparameters as Python constants (``nondiff_argnums``): a value traced under ``jit``
  cannot be one, so it is refused with what to do instead of JAX's TracerBoolConversionError.
  """
  if isinstance(value, jax.core.Tracer):
    raise TypeError(f"{op}: argument '{name}' must be a concrete number, got a value traced under jit; "
                    f"pass a Python float (mark the argument static in jax.jit, or close over it)")
  if isinstance(value, bool) or not isinstance(value, _ARRAY_TYPES) or jnp.ndim(value) != 0 \
      or not jnp.issubdtype(jnp.result_type(value), jnp.floating) \
      and not jnp.issubdtype(jnp.result_type(value), jnp.integer):
    raise TypeError(f"{op}: argument '{name}' must be a real number, got {_what(value)}")
  number = float(value)
  ok = math.isfinite(number) and (low is None or number >= low) and (high is None or number < high)
  if not ok:
    bound = (f"a number in [{low:g}, {high:g})" if low is not None and high is not None else
             f">= {low:g}" if low is not None else f"< {high:g}" if high is not None else "finite")
    raise ValueError(f"{op}: argument '{name}' must be {bound}, got {value!r}")
  return number


def axis_index(op: str, name: str, axis: Any, shape: tuple[int, ...]) -> int:
  """``axis`` as a non-negative int for an array of ``shape``, or a ValueError naming it and the shape."""
  ndim = len(shape)
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
    raise ValueError(f"{op}: argument '{name}' must be an int in [{-ndim}, {ndim}) for x of shape "
                     f"{shape}, got {axis!r}")
  return int(axis) % ndim


def class_labels(op: str, scores: jax.Array, labels: Any, allow_probabilities: bool) -> tuple[jax.Array, bool]:
  """Class labels validated against ``scores`` [..., C]: (labels as an array, whether they are probabilities).

  Integer labels [...] must lie in [0, C) when concrete (under ``jit`` their values cannot be seen, and
  the rules give NaN for such a sample instead); float labels, where allowed, are probabilities [..., C].
  """
  s_shape = scores.shape
  if len(s_shape) < 1:
    raise ValueError(f"{op}: scores must have a class axis [..., C], got shape {s_shape}")
  if allow_probabilities and isinstance(labels, (jax.Array, np.ndarray)) \
      and not jnp.issubdtype(labels.dtype, jnp.integer):
    labels = float_array(op, "labels", labels)
    if labels.shape != s_shape:
      raise ValueError(f"{op}: probability labels must have the logits' shape {s_shape}, got {labels.shape}")
    return labels, True
  if isinstance(labels, (jax.Array, np.ndarray)) and not jnp.issubdtype(labels.dtype, jnp.integer):
    kinds = "integer class indices or float probabilities" if allow_probabilities else "integer class indices"
    raise TypeError(f"{op}: argument 'labels' must be {kinds}, got dtype {labels.dtype}")
  labels = int_array(op, "labels", labels)
  if labels.shape != s_shape[:-1]:
    raise ValueError(f"{op}: integer labels must have shape {s_shape[:-1]} (one class index per "
                     f"sample), got {labels.shape}")
  if not isinstance(labels, jax.core.Tracer):
    values = np.asarray(labels)
    bad = (values < 0) | (values >= s_shape[-1])
    if bad.any():
      raise ValueError(f"{op}: labels must lie in [0, {s_shape[-1]}), got {values[bad].ravel()[:5]} "
                       f"(first of {int(bad.sum())} out of range)")
  return labels, False


def same_dtype(op: str, **arrays: jax.Array) -> None:
  """A TypeError unless the arrays share one dtype, naming the first argument that differs from the first."""
  (first, x), *rest = arrays.items()
  for name, y in rest:
    if y.dtype != x.dtype:
      raise TypeError(f"{op}: argument '{name}' must have the dtype of '{first}' ({x.dtype}), got {y.dtype} "
                      f"(cast it first, e.g. {name}.astype({first}.dtype))")


def same_shape(op: str, pred: jax.Array, target: jax.Array) -> None:
  """A ValueError unless ``pred`` and ``target`` have the same shape: broadcasting a loss mixes samples."""
  if pred.shape != target.shape:
    raise ValueError(f"{op}: 'pred' and 'target' must have the same shape (broadcasting a loss "
                     f"silently mixes samples), got {pred.shape} and {target.shape}")


def unbroadcast(g: jax.Array, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
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


def broadcast_shape(op: str, **arrays: Any) -> tuple[int, ...]:
  """The broadcast shape of the arrays, or a ValueError that names them and their shapes."""
  shapes = {name: jnp.shape(x) for name, x in arrays.items()}
  try:
    return np.broadcast_shapes(*shapes.values())
  except ValueError:
    got = ", ".join(f"{n} {s}" for n, s in shapes.items())
    raise ValueError(f"{op}: shapes do not broadcast together: {got}") from None


def broadcastable_floats(op: str, **arrays: Any) -> tuple[jax.Array, ...]:
  """``float_arrays`` of the keyword arguments, which must broadcast together: a binary gate's validation."""
  floats = float_arrays(op, **arrays)
  broadcast_shape(op, **dict(zip(arrays, floats)))
  return floats


def shape_dtype(x: Any) -> tuple[tuple[int, ...], Any]:
  """``(shape, dtype)`` of ``x``: what a rule keeps (as a static argument) to ``unbroadcast`` x's cotangent."""
  return jnp.shape(x), jnp.result_type(x)


def require_reduction(op: str, reduction: Any) -> None:
  if not isinstance(reduction, str) or reduction not in REDUCTIONS:
    raise ValueError(f"{op}: argument 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_batch(per_sample: jax.Array, reduction: str, keep: jax.Array | None = None) -> jax.Array:
  """Applies ``reduction`` ("mean", "sum" or "none") over the batch axis of per-sample losses; with ``keep``
  (bool, the samples not ignored, whose losses are already 0 elsewhere) "mean" divides by the samples kept.

  The mean of no samples is NaN (0/0), as ``jnp.mean`` gives.
  """
  if reduction == "none":
    return per_sample
  total = jnp.sum(per_sample)
  if reduction == "sum":
    return total
  return total / (per_sample.size if keep is None else jnp.sum(keep).astype(per_sample.dtype))


def balanced_blocks(n: int, most: int) -> tuple[int, int]:
  """(size, count): as few blocks of at most ``most`` as cover ``n``, of equal size (the padding of the last
  is < count), e.g. 600 at most 512 is two of 300. ``n = 0`` is one block of 1, all padding, so that a
  blocked loop still runs once over a masked block instead of reducing over an empty axis."""
  count = max(1, -(-n // most))
  return max(1, -(-n // count)), count
