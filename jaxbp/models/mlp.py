"""The multilayer perceptron of note 004, on the manual rules: any widths, five activations, He or Xavier
initialisation, optional residual connections, batch norm (running statistics in a state pytree) and dropout.

``params`` is ``{"layers": [{"w": [D_in, D_out], "b": [D_out]}, ...]}``, where a batch-normalised hidden layer
has ``"gamma"`` and ``"beta"`` ``[D_out]`` instead of ``"b"`` (a bias before BN is subtracted again, so its
true gradient is 0; left in, Adam would amplify its rounding noise into steps of size lr), and
``state`` is ``{"layers": [{"mean": [D_out], "var": [D_out]}, ...]}`` for the hidden layers when batch norm
is on, else ``{}``. Hidden layer ℓ computes

    z = h·W + b  (with batch norm: z = BN(h·W; γ, β))
    a = act(z);  a ← dropout(a) in training
    h' = h + a if residual and the widths agree, else a

and the last layer is linear (logits). Every operation comes from ``ops``.
"""

import functools
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import ops as _ops
from jaxbp.models._registry import HEADS
from jaxbp.models._registry import DataSpec
from jaxbp.models._registry import register

ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh")
INITS = ("he", "xavier", "glorot")


class MLPConfig(NamedTuple):
  """The architecture; hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    sizes: ``(D_in, H_1, ..., H_k, D_out)``; ``(D_in, D_out)`` is a linear model (no hidden layer).
    activation: one of ``ACTIVATIONS``, applied after every hidden layer.
    init: ``"he"`` (N(0, 2/fan_in), for ReLU-like activations) or ``"xavier"``/``"glorot"``
      (U(±√(6/(fan_in + fan_out))), for sigmoid/tanh) (note 004); biases start at 0.
    residual: add each hidden layer's input to its output where the widths agree (h' = h + a).
    batch_norm: batch-normalise every hidden pre-activation; running statistics live in ``state``.
    dropout: inverted-dropout rate for hidden activations in training, in [0, 1).
    bn_momentum: running statistic update r ← m·r + (1 − m)·batch statistic.
    bn_eps: the ε of batch norm, in training and evaluation.
  """
  sizes: tuple
  activation: str = "relu"
  init: str = "he"
  residual: bool = False
  batch_norm: bool = False
  dropout: float = 0.0
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5


def check_network(config: MLPConfig) -> None:
  """Raises ValueError naming the field if ``config`` cannot build a network."""
  sizes = tuple(config.sizes)
  if len(sizes) < 2 or any(not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1 for n in sizes):
    raise ValueError(f"MLPConfig.sizes must be at least two positive integers (in, ..., out), got {sizes}")
  if config.activation not in ACTIVATIONS:
    raise ValueError(f"MLPConfig.activation must be one of {ACTIVATIONS}, got {config.activation!r}")
  if config.init not in INITS:
    raise ValueError(f"MLPConfig.init must be one of {INITS}, got {config.init!r}")
  if not 0.0 <= config.dropout < 1.0:
    raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {config.dropout}")
  if not 0.0 <= config.bn_momentum <= 1.0:
    raise ValueError(f"MLPConfig.bn_momentum must be in [0, 1], got {config.bn_momentum}")


def _init_weight(key, fan_in, fan_out, init, dtype):
  if init == "he":
    return jax.random.normal(key, (fan_in, fan_out), dtype) * math.sqrt(2.0 / fan_in)
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, (fan_in, fan_out), dtype, -limit, limit)


def init_mlp(key: jax.Array, config: MLPConfig, *, dtype: Any = jnp.float32) -> tuple[dict, dict]:
  """Draws the parameters and the (batch-norm) state of an MLP.

  Args:
    key: a PRNG key; one subkey per layer.
    config: an :class:`MLPConfig`.
    dtype: parameter dtype.

  Returns:
    ``(params, state)`` as described in the module docstring.
  """
  check_network(config)
  return _init_mlp(key, config._replace(sizes=tuple(config.sizes)), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compile, not one per eager random op
def _init_mlp(key, config, dtype):
  sizes = config.sizes
  keys = jax.random.split(key, len(sizes) - 1)
  layers, stats = [], []
  for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    layer = {"w": _init_weight(k, fan_in, fan_out, config.init, dtype)}
    if config.batch_norm and i < len(sizes) - 2:  # no bias before batch norm: BN subtracts it, its gradient is 0
      layer["gamma"] = jnp.ones((fan_out,), dtype)
      layer["beta"] = jnp.zeros((fan_out,), dtype)
      stats.append({"mean": jnp.zeros((fan_out,), dtype), "var": jnp.ones((fan_out,), dtype)})
    else:
      layer["b"] = jnp.zeros((fan_out,), dtype)
    layers.append(layer)
  return {"layers": layers}, ({"layers": stats} if stats else {})


def _batch_norm(ops, config, layer, stats, z, train):
  """BN of one hidden layer: batch statistics (and updated running ones) in training, running ones after."""
  if train:
    mean = jax.lax.stop_gradient(jnp.mean(z, axis=0))
    var = jax.lax.stop_gradient(jnp.var(z, axis=0))
    m = config.bn_momentum
    new_stats = {"mean": m * stats["mean"] + (1 - m) * mean, "var": m * stats["var"] + (1 - m) * var}
    return ops.batch_norm(z, layer["gamma"], layer["beta"], eps=config.bn_eps), new_stats
  inv = jax.lax.rsqrt(stats["var"] + config.bn_eps)
  z_hat = ops.multiply(ops.add(z, -stats["mean"]), inv)
  return ops.add(ops.multiply(z_hat, layer["gamma"]), layer["beta"]), stats


def mlp_apply(params: dict, x: jax.Array, config: MLPConfig, *, state: Any = None, train: bool = False,
              key: Any = None, ops: Any = _ops) -> tuple[jax.Array, dict]:
  """Runs the MLP on a batch.

  Args:
    params: from :func:`init_mlp`.
    x: ``[N, D_in]`` features.
    config: the :class:`MLPConfig` the parameters were drawn for.
    state: batch-norm running statistics from :func:`init_mlp` (required iff ``config.batch_norm``).
    train: training mode: batch statistics for batch norm (updating the running ones) and dropout.
    key: PRNG key for dropout; required when ``train`` and ``config.dropout > 0``.
    ops: the op namespace, ``jaxbp.ops`` (manual rules) or ``jaxbp.ops.reference`` (autodiff).

  Returns:
    ``(logits, state)``: ``[N, D_out]`` outputs and the new state (unchanged unless training with batch norm).
  """
  layers = params["layers"]
  if x.ndim != 2 or x.shape[1] != layers[0]["w"].shape[0]:
    raise ValueError(f"mlp_apply: x must have shape [N, {layers[0]['w'].shape[0]}], got {x.shape}")
  if config.batch_norm and not state:
    raise ValueError("mlp_apply: config.batch_norm is on but 'state' (running statistics) was not given")
  use_dropout = train and config.dropout > 0
  if use_dropout and key is None:
    raise ValueError("mlp_apply: training with dropout needs a PRNG 'key'")
  keys = jax.random.split(key, len(layers)) if use_dropout else None
  activate = getattr(ops, config.activation)
  new_stats, h = [], x
  for i, layer in enumerate(layers[:-1]):
    if config.batch_norm:
      z, s = _batch_norm(ops, config, layer, state["layers"][i], ops.matmul(h, layer["w"]), train)
      new_stats.append(s)
    else:
      z = ops.linear(h, layer["w"], layer["b"])
    a = activate(z)
    if keys is not None:
      a = ops.dropout(keys[i], a, config.dropout)
    h = ops.add(h, a) if config.residual and h.shape == a.shape else a
  out = ops.linear(h, layers[-1]["w"], layers[-1]["b"])
  if new_stats:
    state = {"layers": new_stats}
  return out, state if state is not None else {}


# ------------------------------------------------------------------------ the families jaxbp train knows

class MLP(NamedTuple):
  """The ``mlp`` family of the model registry: an :class:`MLPConfig` without the widths the data decides.

  The network is ``MLPConfig((D, *hidden, C), ...)`` for data with D features and C classes. The
  defaults are ``jaxbp train``'s. Attributes as in :class:`MLPConfig`, by name and in order, with ``hidden``
  (the hidden widths) in place of ``sizes``; ``network`` passes them on by name.
  """
  hidden: tuple[int, ...] = (256, 256)
  activation: str = "relu"
  init: str = "he"
  residual: bool = False
  batch_norm: bool = False
  dropout: float = 0.2
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5


class Linear(NamedTuple):
  """The ``linear`` family: no hidden layer, logits = x·W + b (softmax regression, or with the hinge
  loss a linear SVM, note 001). ``init`` as in :class:`MLPConfig`."""
  init: str = "he"


def network(config: "MLP | Linear", spec: DataSpec) -> MLPConfig:
  """The :class:`MLPConfig` of an ``mlp`` or ``linear`` model on data shaped as ``spec`` says."""
  if spec.kind != "features" or len(spec.input_shape) != 1:
    raise ValueError(f"{type(config).__name__.lower()}: needs feature vectors [N, D], got {spec}")
  if isinstance(config, Linear):
    return MLPConfig((spec.input_shape[0], spec.num_classes), init=config.init)
  fields = config._asdict()
  return MLPConfig((spec.input_shape[0], *fields.pop("hidden"), spec.num_classes), **fields)


def _init(key: jax.Array, config: "MLP | Linear", spec: DataSpec) -> tuple[Any, Any]:
  return init_mlp(key, network(config, spec))


def _apply(params: Any, state: Any, inputs: jax.Array, config: "MLP | Linear", spec: DataSpec, *, train: bool,
           key: jax.Array | None, ops: Any) -> tuple[jax.Array, Any]:
  return mlp_apply(params, inputs, network(config, spec), state=state, train=train, key=key, ops=ops)


def check(config: MLP) -> None:
  """The ``mlp`` family's check: a hidden layer, and a network it can build."""
  if not config.hidden:
    raise ValueError("hidden must name at least one width for model 'mlp' (or use model 'linear')")
  check_network(network(config, DataSpec("features", (1,), 2)))


_HELP = {
    "hidden": "hidden layer widths", "activation": "hidden activation",
    "init": "he: N(0, 2/fan_in); xavier/glorot: U(±√(6/(in+out)))",
    "residual": "residual connections where widths agree",
    "batch_norm": "batch-normalise hidden layers (running stats for eval)",
    "dropout": "hidden dropout rate in [0, 1)", "bn_momentum": "batch-norm running-statistics momentum",
    "bn_eps": "batch-norm epsilon",
}
register("mlp", MLP, _init, _apply, losses=HEADS, check=check, help=_HELP,
         choices={"activation": ACTIVATIONS, "init": INITS}, summary="multilayer perceptron (note 004)")
register("linear", Linear, _init, _apply, losses=HEADS, help=_HELP, choices={"init": INITS},
         summary="no hidden layer: softmax regression, or a linear SVM with --loss hinge")
