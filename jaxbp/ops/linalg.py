"""Matrix products (note 001, section 2): dX = dY·Wᵀ, dW = Xᵀ·dY, the only shapes that fit."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import unbroadcast


def _check_matmul(op, x, w):
  xs, ws = jnp.shape(x), jnp.shape(w)
  if len(ws) != 2:
    raise ValueError(f"{op}: argument 'w' must be a matrix [D, M], got shape {ws}")
  if len(xs) < 1 or xs[-1] != ws[0]:
    raise ValueError(f"{op}: inner dimensions differ: x has shape {xs} (last axis D = "
                     f"{xs[-1] if xs else None}) but w has shape {ws} (first axis D = {ws[0]})")


def _weight_grad(x, g):
  """dW = Xᵀ·dY with the batch axes of X and dY flattened into one: [D, N] @ [N, M].

  Written as-is: the product contracts the leading (batch) axis of both operands and XLA picks the
  kernel. Measured on a 2-core EPYC with jax 0.10.2 (benchmarks/layout_study.py, docs/performance.md),
  it runs at the GEMM ceiling; materialising Xᵀ first (an optimization barrier) made the large MLP's
  step about 3% slower and added the network input's transposed copy to the temporary memory.
  N is counted, not inferred with ``reshape(-1, D)``, so an empty axis (D = 0 or N = 0) works.
  """
  n = math.prod(x.shape[:-1])
  x2 = x.reshape(n, x.shape[-1])
  g2 = g.reshape(n, g.shape[-1])
  return jnp.matmul(x2.T, g2)


def _input_grad(g, w):
  """dX = dY·Wᵀ, for dY of shape [..., M] and W of shape [D, M]."""
  return jnp.matmul(g, w.T)


def _matmul_sampler(x_shape, w_shape):
  def sample(rng, dtype):
    return (uniform(rng, x_shape, dtype), uniform(rng, w_shape, dtype)), {}
  return sample


# x of each rank the rule flattens differently, and N or D of length 0; N, D, M all distinct.
_PRODUCTS = mixed_dtypes({
    "x a vector": _matmul_sampler((3,), (3, 4)),
    "x a matrix": _matmul_sampler((2, 3), (3, 4)),
    "x of rank 3": _matmul_sampler((2, 5, 3), (3, 4)),
    "N = 0": _matmul_sampler((0, 3), (3, 4)),
    "D = 0": _matmul_sampler((2, 0), (0, 4)),
})


# -------------------------------------------------------------------------------------------- matmul

def matmul(x: ArrayLike, w: ArrayLike) -> jax.Array:
  """Y = X·W for X of shape [..., D] and W of shape [D, M].  (Note 001, section 2.)

  Forward: y_{n,m} = Σ_d x_{n,d} w_{d,m}. Each x_{n,d} touches the whole row y_{n,:}, so
  ∂L/∂x_{n,d} = Σ_m ∂L/∂y_{n,m} w_{d,m}: the VJP is dX = dY·Wᵀ ([N, M]·[M, D]) and
  dW = Xᵀ·dY ([D, N]·[N, M]), with every leading axis of X counted as part of N. The rule keeps
  both inputs: each one's gradient needs the other.

  Args:
    x: float array [..., D].
    w: float array [D, M].

  Returns:
    Array [..., M].
  """
  x, w = float_arrays("matmul", x=x, w=w)
  _check_matmul("matmul", x, w)
  return _matmul(x, w)


class _MatmulResiduals(NamedTuple):
  x: jax.Array  # [..., M, K]: dw = xᵀ·g (the input, no new buffer)
  w: jax.Array  # [K, N]: dx = g·wᵀ (a parameter, no new buffer)


def _matmul_fwd(x, w):
  return jnp.matmul(x, w), _MatmulResiduals(x, w)


def _matmul_bwd(res, g):
  x, w = res
  dx = _input_grad(g, w).astype(x.dtype)
  dw = _weight_grad(x, g).astype(w.dtype)
  return dx, dw


_matmul = vjp_rule(matmul, _matmul_fwd, _matmul_bwd)
register(matmul, jnp.matmul, any_branch(_PRODUCTS), branches=_PRODUCTS, note="001")


# -------------------------------------------------------------------------------------------- linear

def linear(x: ArrayLike, w: ArrayLike, b: ArrayLike) -> jax.Array:
  """Y = X·W + b for X [..., D], W [D, M], b [M]: the fully connected layer.  (Notes 001, 004.)

  VJP: dX = dY·Wᵀ, dW = Xᵀ·dY (as ``matmul``), db = Σₙ dY_{n,:}: the bias was broadcast over
  every row, so its gradient sums over them (note 004: "按样本求和").

  Args:
    x: float array [..., D].
    w: float array [D, M].
    b: float array [M].

  Returns:
    Array [..., M].
  """
  x, w, b = float_arrays("linear", x=x, w=w, b=b)
  _check_matmul("linear", x, w)
  if b.shape != (w.shape[1],):
    raise ValueError(f"linear: argument 'b' must have shape ({w.shape[1]},) to match w of "
                     f"shape {w.shape}, got {b.shape}")
  return _linear(x, w, b)


class _LinearResiduals(NamedTuple):
  x: jax.Array  # [..., K]: dw = xᵀ·g (the input, no new buffer)
  w: jax.Array  # [K, N]: dx = g·wᵀ (a parameter)
  b: jax.Array  # [N], only for db's shape and dtype (a parameter, no new buffer)


def _linear_fwd(x, w, b):
  return jnp.matmul(x, w) + b, _LinearResiduals(x, w, b)


def _linear_bwd(res, g):
  x, w, b = res
  dx, dw = _matmul_bwd((x, w), g)
  return dx, dw, unbroadcast(g, b.shape, b.dtype)


def _linear_ref(x, w, b):
  return jnp.matmul(x, w) + b


def _with_bias(sample):
  def sample_linear(rng, dtype):
    (x, w), _ = sample(rng, dtype)
    return (x, w, uniform(rng, (w.shape[1],), dtype)), {}
  return sample_linear


_LAYERS = {name: _with_bias(sample) for name, sample in _PRODUCTS.items()}
_linear = vjp_rule(linear, _linear_fwd, _linear_bwd)
register(linear, _linear_ref, any_branch(_LAYERS), branches=_LAYERS, note="001, 004")
