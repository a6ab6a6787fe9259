"""A small convolutional network for images such as the 8×8 digits, on the manual rules of ``jaxbp.ops``.

    x [N, H·W] → [N, H, W, 1]
    for each width C_ℓ of ``channels``:  h = relu(conv2d(h, W_ℓ, b_ℓ))      (K×K kernels, stride 1)
    h = max_pool2d(h, pool)  →  flatten  [N, H′·W′·C_last]
    for each width of ``hidden``:        h = dropout(relu(h·W + b))          (dropout in training only)
    logits = h·W + b                     [N, classes]

``params`` is ``{"convs": [{"w": [K, K, C_in, C_out], "b": [C_out]}, ...], "dense": [{"w": [D_in, D_out],
"b": [D_out]}, ...]}``; there is no state. Weights start He-normal (N(0, 2/fan_in), fan_in = K·K·C_in
for a kernel: every output pixel sums that many products), biases at 0. Every differentiable operation
(conv2d, relu, max_pool2d, linear, dropout) comes from ``ops``; the flatten is a reshape, which moves
no gradient arithmetic.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import ops as _ops

PADDINGS = ("SAME", "VALID")


class CNN(NamedTuple):
  """The architecture of the ``cnn`` family; hashable, a static argument of ``jax.jit``.

  Attributes:
    channels: output channels of each K×K convolution, in order (at least one).
    kernel: K, the side of every convolution kernel.
    padding: ``"SAME"`` (each convolution keeps H×W) or ``"VALID"`` (each takes K − 1 off).
    pool: the window and stride of the max pool after the last convolution; 1 means no pooling.
    hidden: widths of the fully connected ReLU layers between the pool and the logits.
    dropout: inverted-dropout rate after each hidden dense layer, in training; in [0, 1).
  """
  channels: tuple[int, ...] = (32, 64)
  kernel: int = 3
  padding: str = "SAME"
  pool: int = 2
  hidden: tuple[int, ...] = (128,)
  dropout: float = 0.3


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
  """(H, W, C) of one example: ``(D,)`` with D a square is a D = H·H grey image; (H, W, C) is itself."""
  if len(input_shape) == 3:
    return tuple(input_shape)  # type: ignore[return-value]
  side = math.isqrt(input_shape[0]) if len(input_shape) == 1 else 0
  if side * side != (input_shape[0] if len(input_shape) == 1 else -1) or side == 0:
    raise ValueError(f"cnn: the inputs must be square grey images [N, H·H] (e.g. the 8×8 digits, D = 64) or "
                     f"[N, H, W, C]; got examples of shape {tuple(input_shape)}")
  return side, side, 1


def check(config: CNN) -> None:
  """Raises ValueError naming the field if ``config`` cannot build a network."""
  for field in ("channels", "hidden"):
    widths = getattr(config, field)
    if any(n < 1 for n in widths):
      raise ValueError(f"cnn: {field} must be positive widths, got {widths}")
  if not config.channels:
    raise ValueError("cnn: channels must name at least one convolution")
  if config.kernel < 1 or config.pool < 1:
    raise ValueError(f"cnn: kernel and pool must be >= 1, got kernel {config.kernel}, pool {config.pool}")
  if config.padding not in PADDINGS:
    raise ValueError(f"cnn: padding must be one of {PADDINGS}, got {config.padding!r}")
  if not 0.0 <= config.dropout < 1.0:
    raise ValueError(f"cnn: dropout must be in [0, 1), got {config.dropout}")


def _feature_size(config: CNN, hwc: tuple[int, int, int]) -> int:
  """The flattened width after the convolutions and the pool; ValueError if the image is too small."""
  h, w, _ = hwc
  shrink = 0 if config.padding == "SAME" else (config.kernel - 1) * len(config.channels)
  h, w = h - shrink, w - shrink
  if h < config.pool or w < config.pool:
    raise ValueError(f"cnn: a {hwc[0]}×{hwc[1]} image is too small for {len(config.channels)} {config.padding} "
                     f"{config.kernel}×{config.kernel} convolutions and a {config.pool}×{config.pool} pool")
  return (h // config.pool) * (w // config.pool) * config.channels[-1]


def init_cnn(key: jax.Array, config: CNN, input_shape: tuple[int, ...], num_classes: int,
             *, dtype: Any = jnp.float32) -> tuple[dict, dict]:
  """Draws the parameters of a CNN for examples of ``input_shape`` and ``num_classes`` classes.

  Returns:
    ``(params, {})`` as described in the module docstring (no state).
  """
  check(config)
  hwc = image_shape(input_shape)
  k = config.kernel
  widths = (hwc[2], *config.channels)
  sizes = (_feature_size(config, hwc), *config.hidden, num_classes)
  keys = iter(jax.random.split(key, len(widths) - 1 + len(sizes) - 1))
  convs = [{"w": jax.random.normal(next(keys), (k, k, c_in, c_out), dtype) * math.sqrt(2.0 / (k * k * c_in)),
            "b": jnp.zeros((c_out,), dtype)} for c_in, c_out in zip(widths[:-1], widths[1:])]
  dense = [{"w": jax.random.normal(next(keys), (d_in, d_out), dtype) * math.sqrt(2.0 / d_in),
            "b": jnp.zeros((d_out,), dtype)} for d_in, d_out in zip(sizes[:-1], sizes[1:])]
  return {"convs": convs, "dense": dense}, {}


def cnn_apply(params: dict, x: jax.Array, config: CNN, *, train: bool = False, key: jax.Array | None = None,
              ops: Any = _ops) -> jax.Array:
  """The logits [N, classes] of a batch ``x`` [N, H·W] (or [N, H, W, C]).

  Args:
    params: from :func:`init_cnn`.
    x: the batch.
    config: the :class:`CNN` the parameters were drawn for.
    train: training mode (dropout on).
    key: PRNG key for dropout; required when ``train`` and ``config.dropout > 0``.
    ops: ``jaxbp.ops`` (manual rules) or ``jaxbp.ops.reference`` (autodiff).
  """
  c_in = params["convs"][0]["w"].shape[2]
  h = x.reshape(x.shape[0], *image_shape(x.shape[1:])[:2], c_in) if x.ndim == 2 else x
  for layer in params["convs"]:
    h = ops.relu(ops.conv2d(h, layer["w"], layer["b"], padding=config.padding))
  if config.pool > 1:
    h = ops.max_pool2d(h, config.pool)
  h = h.reshape(h.shape[0], -1)
  use_dropout = train and config.dropout > 0
  if use_dropout and key is None:
    raise ValueError("cnn_apply: training with dropout needs a PRNG 'key'")
  for i, layer in enumerate(params["dense"][:-1]):
    h = ops.relu(ops.linear(h, layer["w"], layer["b"]))
    if use_dropout and key is not None:
      h = ops.dropout(jax.random.fold_in(key, i), h, config.dropout)
  return ops.linear(h, params["dense"][-1]["w"], params["dense"][-1]["b"])
