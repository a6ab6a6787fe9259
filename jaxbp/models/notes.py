"""The notes' small models, as ``init_*`` / ``*_apply`` pairs over dicts of arrays.

Every apply takes the op namespace as ``ops``: ``jaxbp.ops`` (the default) runs the hand-written rules,
``jaxbp.ops.reference`` the plain-jnp references that JAX differentiates itself; the model code is the same.
Pair them with a loss from the same namespace, e.g. ``ops.squared_error`` (note 000's E = ½(O − t)²) or
``(pred - y) ** 2`` as note 002 writes it.
"""

from typing import Any

import jax
import jax.numpy as jnp

from jaxbp import ops as _ops


def init_neuron(key: jax.Array, in_features: int, *, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """One sigmoid neuron without bias (note 000): ``w`` of shape ``[in_features, 1]``, N(0, 1) entries.

  Note 000 writes PyTorch's ``torch.sigmoid(x @ w.t())`` with ``w`` of shape ``[1, D]``; here ``w`` is
  stored already transposed, ``[D, 1]``, so the apply is ``x @ w``.
  """
  return {"w": jax.random.normal(key, (in_features, 1), dtype)}


def neuron_apply(params: dict, x: jax.typing.ArrayLike, *, ops: Any = _ops) -> jax.Array:
  """O = σ(x·w): ``x`` ``[N, D]`` → ``[N, 1]``. With E = ½(O − t)², ∂E/∂w_j = (O − t)·O(1 − O)·x_j."""
  return ops.sigmoid(ops.matmul(x, params["w"]))


def init_proportional(key: jax.Array, *, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """ŷ = x·w (note 002): one scalar weight, N(0, 1). Note 002 starts from ``{"w": 1.0}``."""
  return {"w": jax.random.normal(key, (), dtype)}


def proportional_apply(params: dict, x: jax.typing.ArrayLike, *, ops: Any = _ops) -> jax.Array:
  """ŷ = x·w, elementwise over ``x`` of any shape; ∂ŷ/∂w = x."""
  return ops.multiply(x, params["w"])


def init_affine(key: jax.Array, *, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """ŷ = x·w + b (note 002, exercise 3.2): scalars ``w`` ~ N(0, 1) and ``b`` = 0."""
  return {"w": jax.random.normal(key, (), dtype), "b": jnp.zeros((), dtype)}


def affine_apply(params: dict, x: jax.typing.ArrayLike, *, ops: Any = _ops) -> jax.Array:
  """ŷ = x·w + b, elementwise; ∂ŷ/∂w = x, ∂ŷ/∂b = 1."""
  return ops.add(ops.multiply(x, params["w"]), params["b"])


def init_quadratic(key: jax.Array, *, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """ŷ = w1·x² + w2·x + b (note 002, exercise 3.3): ``w1``, ``w2`` ~ N(0, 1), ``b`` = 0."""
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (), dtype), "w2": jax.random.normal(k2, (), dtype),
          "b": jnp.zeros((), dtype)}


def quadratic_apply(params: dict, x: jax.typing.ArrayLike, *, ops: Any = _ops) -> jax.Array:
  """ŷ = w1·x² + w2·x + b, elementwise; ∂ŷ/∂w1 = x², ∂ŷ/∂w2 = x, ∂ŷ/∂b = 1."""
  square = ops.multiply(x, x)
  return ops.add(ops.add(ops.multiply(square, params["w1"]), ops.multiply(x, params["w2"])), params["b"])
