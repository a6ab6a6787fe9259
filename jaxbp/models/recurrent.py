"""Character-level recurrent language models, ``rnn_lm`` and ``lstm_lm``, on the manual rules.

The model reads a token sequence left to right and predicts each next token (the tasks of
:mod:`jaxbp.train.tasks`):

    e_t = E[token_t]                       ops.embedding      [N, T, D_e]
    h^ℓ_t = cell(h^ℓ_{t−1}, h^{ℓ−1}_t)      ops.rnn / ops.lstm [N, T, H] per layer ℓ = 1..L (h^0 = e)
    logits_t = h^L_t·W_out + b_out         ops.linear         [N, T, V]

``params`` is ``{"embed": [V, D_e], "layers": [{"w_x": [D_in, k·H], "w_h": [H, k·H], "b": [k·H]}, ...],
"out": {"w": [H, V], "b": [V]}}`` with k = 1 for the tanh RNN and k = 4 (gates i, f, g, o) for the LSTM.
The keys sort in the network's order (embed < layers < out), so pytree order, which ``--grad-flow``
lists the weight gradients in, runs from the input side to the output (within a layer, w_h before w_x).
Initial states are zeros. Initialisation as PyTorch's ``nn.RNN``/``nn.LSTM``: every recurrent weight and
bias U(±1/√H); the LSTM's forget-gate bias then starts at 1, so the cell remembers by default
(Gers et al., 2000; Jozefowicz et al., 2015). The embedding is N(0, 1), the output layer Xavier-uniform.

Every operation comes from ``ops``: ``jaxbp.ops`` runs the hand-written rules (one backward-through-time
scan per layer), ``jaxbp.ops.reference`` the plain-JAX references that ``jax.grad`` differentiates.
"""

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import ops as _ops
from jaxbp.models._registry import DataSpec
from jaxbp.models._registry import register

CELLS = ("rnn", "lstm")


class RecurrentConfig(NamedTuple):
  """The architecture; hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    cell: ``"rnn"`` (tanh) or ``"lstm"``.
    vocab_size: V, the input vocabulary.
    num_classes: C, the output vocabulary (the logits' last axis).
    hidden: H, the state width of every layer.
    layers: L, stacked recurrent layers (each reads the hidden states of the one below).
    embed: D_e, the embedding width.
  """
  cell: str = "lstm"
  vocab_size: int = 13
  num_classes: int = 13
  hidden: int = 128
  layers: int = 1
  embed: int = 32


def check_network(config: RecurrentConfig) -> None:
  """Raises ValueError naming the field if ``config`` cannot build a model."""
  if config.cell not in CELLS:
    raise ValueError(f"RecurrentConfig.cell must be one of {CELLS}, got {config.cell!r}")
  for field in ("vocab_size", "num_classes", "hidden", "layers", "embed"):
    v = getattr(config, field)
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
      raise ValueError(f"RecurrentConfig.{field} must be a positive integer, got {v!r}")


def init_recurrent(key: jax.Array, config: RecurrentConfig, *, dtype: Any = jnp.float32) -> dict:
  """Draws the parameters of the model ``config`` describes (see the module docstring)."""
  check_network(config)
  k, h, c = (4 if config.cell == "lstm" else 1), config.hidden, config.num_classes
  keys = jax.random.split(key, 2 + config.layers)
  bound = 1 / math.sqrt(h)
  uniform = lambda key, shape, limit: jax.random.uniform(key, shape, dtype, -limit, limit)
  layers = []
  for i in range(config.layers):
    kx, kh, kb = jax.random.split(keys[2 + i], 3)
    d_in = config.embed if i == 0 else h
    b = uniform(kb, (k * h,), bound)
    if config.cell == "lstm":
      b = b.at[h:2 * h].set(1.0)  # forget gate open at the start
    layers.append({"w_x": uniform(kx, (d_in, k * h), bound), "w_h": uniform(kh, (h, k * h), bound), "b": b})
  return {"embed": jax.random.normal(keys[0], (config.vocab_size, config.embed), dtype), "layers": layers,
          "out": {"w": uniform(keys[1], (h, c), math.sqrt(6 / (h + c))), "b": jnp.zeros((c,), dtype)}}


def recurrent_states(params: dict, inputs: jax.Array, config: RecurrentConfig, *, ops: Any = _ops) -> list:
  """The hidden states of every layer, ``[h^1, ..., h^L]``, each ``[N, T, H]``.

  ``inputs`` are the layer-1 inputs: int token ids ``[N, T]`` (embedded here) or already embedded
  floats ``[N, T, D_e]`` (what :func:`input_grad_norms` differentiates).
  """
  h = ops.embedding(inputs, params["embed"]) if jnp.issubdtype(inputs.dtype, jnp.integer) else inputs
  n = inputs.shape[0]
  states = []
  for layer in params["layers"]:
    zeros = jnp.zeros((n, config.hidden), h.dtype)
    if config.cell == "lstm":
      h, _ = ops.lstm(h, zeros, zeros, layer["w_x"], layer["w_h"], layer["b"])
    else:
      h, _ = ops.rnn(h, zeros, layer["w_x"], layer["w_h"], layer["b"])
    states.append(h)
  return states


def recurrent_apply(params: dict, inputs: jax.Array, config: RecurrentConfig, *, ops: Any = _ops) -> jax.Array:
  """Next-token logits ``[N, T, C]`` for token ids ``inputs`` int ``[N, T]`` (or embedded ``[N, T, D_e]``).

  Args:
    params: from :func:`init_recurrent`.
    inputs: int ``[N, T]`` token ids in ``[0, vocab_size)``.
    config: the :class:`RecurrentConfig` the parameters were drawn for.
    ops: the op namespace, ``jaxbp.ops`` (manual rules) or ``jaxbp.ops.reference`` (autodiff).
  """
  if inputs.ndim not in (2, 3):
    raise ValueError(f"recurrent_apply: inputs must be token ids [N, T], got shape {inputs.shape}")
  top = recurrent_states(params, inputs, config, ops=ops)[-1]
  return ops.linear(top, params["out"]["w"], params["out"]["b"])


def input_grad_norms(params: dict, batch: tuple, config: RecurrentConfig, *, ops: Any = _ops) -> jax.Array:
  """‖∂L/∂x_t‖ for every step t, ``[T]``: how much gradient reaches the input at step t (note 004).

  ``batch`` is ``(inputs, targets, mask)`` as the model registry defines it and L the mean
  cross-entropy over the scored positions. The gradient of x_t is da_t·W_xᵀ, the backward scan's
  carry at step t projected onto the input: for a task scored at its end, it shows how the gradient
  fades (plain RNN) or holds (LSTM) on its way back through time. Norms over the batch and features.
  """
  inputs, targets, mask = batch
  embedded = ops.embedding(inputs, params["embed"])

  def loss(x):
    logits = recurrent_apply(params, x, config, ops=ops)
    per_position = ops.softmax_cross_entropy(logits, targets, reduction="none")
    return jnp.sum(per_position * mask) / jnp.maximum(jnp.sum(mask), 1)
  return jnp.sqrt(jnp.sum(jax.grad(loss)(embedded) ** 2, axis=(0, 2)))


# ------------------------------------------------------------------------------ the model registry

class RNN(NamedTuple):
  """The ``rnn`` family: embedding → ``num_layers`` tanh RNN layers → linear head (``rnn_lm``).

  Attributes:
    hidden_size: H, the state width of every layer.
    num_layers: stacked recurrent layers.
    embed_size: the embedding width.
  """
  hidden_size: int = 128
  num_layers: int = 1
  embed_size: int = 32


class LSTM(NamedTuple):
  """The ``lstm`` family: embedding → ``num_layers`` LSTM layers → linear head (``lstm_lm``).
  Attributes as in :class:`RNN`."""
  hidden_size: int = 128
  num_layers: int = 1
  embed_size: int = 32


def network(config: "RNN | LSTM", spec: DataSpec) -> RecurrentConfig:
  """The :class:`RecurrentConfig` of an ``rnn`` or ``lstm`` model on token data shaped as ``spec`` says."""
  cell = "lstm" if isinstance(config, LSTM) else "rnn"
  if spec.kind != "tokens":
    raise ValueError(f"{cell}: needs token sequences (--task), got {spec.kind} data")
  return RecurrentConfig(cell, spec.vocab_size, spec.num_classes, config.hidden_size, config.num_layers,
                         config.embed_size)


def _init(key, config, spec):
  return init_recurrent(key, network(config, spec)), {}


def _apply(params, state, inputs, config, spec, *, train, key, ops):
  del train, key  # no dropout, no batch statistics
  return recurrent_apply(params, inputs, network(config, spec), ops=ops), state


def _time_grad_norms(params, state, batch, config, spec, ops):
  del state
  return input_grad_norms(params, batch, network(config, spec), ops=ops)


def check(config: "RNN | LSTM") -> None:
  """The ``rnn`` and ``lstm`` families' check: a network it can build."""
  check_network(RecurrentConfig(hidden=config.hidden_size, layers=config.num_layers, embed=config.embed_size))


_HELP = {"hidden_size": "state width H of every recurrent layer", "num_layers": "stacked recurrent layers",
         "embed_size": "embedding width"}
# Note 004: clip the global gradient norm of a recurrent model (exploding gradients); and a run sized
# for the generated tasks (20,000 sequences an epoch) rather than for the digits.
TRAIN_DEFAULTS = {"clip": 1.0, "lr": 1e-2, "epochs": 4, "batch_size": 64}
register("rnn", RNN, _init, _apply, losses=("cross-entropy",), data="tokens", check=check, help=_HELP,
         summary="tanh RNN language model (rnn_lm) for --task", train_defaults=TRAIN_DEFAULTS,
         time_grad_norms=_time_grad_norms)
register("lstm", LSTM, _init, _apply, losses=("cross-entropy",), data="tokens", check=check, help=_HELP,
         summary="LSTM language model (lstm_lm) for --task", train_defaults=TRAIN_DEFAULTS,
         time_grad_norms=_time_grad_norms)
