"""A decoder-only transformer over token ids, built from ``ops`` (hand-written rules or their references).

    x⁰ = E_tok[ids] + E_pos[0..T−1]                                   (``ops.embedding``, twice)
    for each of ``layers`` blocks (pre-norm):
      x ← x + W_o·attention(split_heads(norm(x)·W_qkv + b_qkv), causal) + b_o
      x ← x + W₂·gelu(norm(x)·W₁ + b₁) + b₂
    h = norm(x)   → the fused head: linear_softmax_cross_entropy(h, W_out, targets)

``norm`` is ``ops.rms_norm`` (γ) or ``ops.layer_norm`` (γ, β). The outputs of :func:`transformer_apply` are
the last hidden states h [N, T, width], not logits: the loss head multiplies by W_out chunk by chunk and
never holds [N·T, vocabulary] logits (:func:`transformer_head`).

Sharding (Megatron's layout, left to XLA's partitioner): :func:`partition_specs` splits the heads
(W_qkv's columns, W_o's rows) and the MLP's hidden width (W₁'s columns, W₂'s rows) over a mesh axis
``"model"``; the batch goes over ``"data"``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.models._registry import DataSpec
from jaxbp.models._registry import dense_init
from jaxbp.models._registry import register
from jaxbp.models._registry import split_by_name

NORMS = ("rms", "layer")


class Transformer(NamedTuple):
  """Hyperparameters of :func:`transformer_apply`; the vocabulary and the length come from the data.

  Attributes:
    layers: transformer blocks.
    width: the model width D (the residual stream).
    heads: attention heads; D must be a multiple of it (head width D / heads).
    mlp_width: the MLP's hidden width.
    norm: ``"rms"`` (``ops.rms_norm``) or ``"layer"`` (``ops.layer_norm``).
    block_size: queries and keys per block of ``ops.attention``.
  """
  layers: int = 2
  width: int = 64
  heads: int = 4
  mlp_width: int = 256
  norm: str = "rms"
  block_size: int = 512


TransformerConfig = Transformer  # its name before the families' configs were named alike (MLP, CNN, LSTM)


def check(config: Transformer) -> None:
  """Raises ValueError naming the field that makes no model."""
  for field in ("layers", "width", "heads", "mlp_width", "block_size"):
    if getattr(config, field) < 1:
      raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
  if config.width % config.heads:
    raise ValueError(f"width ({config.width}) must be a multiple of heads ({config.heads})")
  if config.norm not in NORMS:
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {config.norm!r}")


def _norm_params(config, d):
  p = {"gamma": jnp.ones((d,), jnp.float32)}
  if config.norm == "layer":
    p["beta"] = jnp.zeros((d,), jnp.float32)
  return p


def init_transformer(key: jax.Array, config: Transformer, vocab_size: int, length: int,
                     num_classes: int) -> dict[str, Any]:
  """Parameters for ids in [0, vocab_size), sequences of at most ``length``, ``num_classes`` outputs.

  W_qkv is [D, heads·3·Dh] with the columns ordered (head, q/k/v, dim), so splitting its columns over
  devices splits whole heads. The residual branches' output weights are scaled by 1/√(2·layers).
  """
  check(config)
  d, f = config.width, config.mlp_width
  keys = jax.random.split(key, 3 + config.layers)
  depth = 1.0 / (2.0 * config.layers) ** 0.5
  blocks = []
  for k in keys[3:]:
    k1, k2, k3, k4 = jax.random.split(k, 4)
    blocks.append({
        "norm1": _norm_params(config, d), "norm2": _norm_params(config, d),
        "w_qkv": dense_init(k1, d, 3 * d), "b_qkv": jnp.zeros((3 * d,), jnp.float32),
        "w_o": dense_init(k2, d, d, depth), "b_o": jnp.zeros((d,), jnp.float32),
        "w1": dense_init(k3, d, f), "b1": jnp.zeros((f,), jnp.float32),
        "w2": dense_init(k4, f, d, depth), "b2": jnp.zeros((d,), jnp.float32),
    })
  return {"embed": jax.random.normal(keys[0], (vocab_size, d), jnp.float32) * 0.5,
          "embed_pos": jax.random.normal(keys[1], (length, d), jnp.float32) * 0.5,
          "blocks": blocks, "norm_out": _norm_params(config, d), "w_out": dense_init(keys[2], d, num_classes)}


def _norm(x, p, ops):
  if "beta" in p:
    return ops.layer_norm(x, p["gamma"], p["beta"])
  return ops.rms_norm(x, p["gamma"])


def _block(x, p, config, ops):
  n, t, d = x.shape
  heads = config.heads
  qkv = ops.linear(_norm(x, p["norm1"], ops), p["w_qkv"], p["b_qkv"]).reshape(n, t, heads, 3, d // heads)
  a = ops.attention(qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2], causal=True,
                    block_size=config.block_size)
  x = ops.add(x, ops.linear(a.reshape(n, t, d), p["w_o"], p["b_o"]))
  hidden = ops.gelu(ops.linear(_norm(x, p["norm2"], ops), p["w1"], p["b1"]))
  return ops.add(x, ops.linear(hidden, p["w2"], p["b2"]))


def transformer_apply(params: dict[str, Any], ids: jax.Array, config: Transformer, *, ops: Any) -> jax.Array:
  """The last hidden states h = norm(x_L) [N, T, width] for int ids [N, T] (T ≤ the initialised length)."""
  t = ids.shape[1]
  if t > params["embed_pos"].shape[0]:
    raise ValueError(f"sequences of length {t} are longer than the {params['embed_pos'].shape[0]} positions "
                     "the model was initialised for")
  x = ops.add(ops.embedding(ids, params["embed"]), ops.embedding(jnp.arange(t), params["embed_pos"]))
  for p in params["blocks"]:
    x = _block(x, p, config, ops)
  return _norm(x, params["norm_out"], ops)


def transformer_head(params: dict[str, Any], hidden: jax.Array, targets: jax.Array, ops: Any,
                     chunk_size: int | None = None, **options: Any) -> tuple[jax.Array, jax.Array]:
  """Per-position losses [N, T] of the fused linear cross-entropy, and the predicted classes [N, T].

  The losses come from ``ops.linear_softmax_cross_entropy(..., reduction="none", **options)`` on h [N·T, D]
  and W_out (``options``: its ``z_loss``, ``label_smoothing``, ``softcap``, ...), so the caller can weight
  positions (a mask) before reducing. The predictions (argmax of h·W_out) carry no gradient.
  """
  n, t, d = hidden.shape
  h2 = hidden.reshape(n * t, d)
  losses = ops.linear_softmax_cross_entropy(h2, params["w_out"], targets.reshape(n * t),
                                            chunk_size=chunk_size, reduction="none", **options)
  predictions = jnp.argmax(jax.lax.stop_gradient(h2) @ jax.lax.stop_gradient(params["w_out"]), axis=-1)
  return losses.reshape(n, t), predictions.reshape(n, t).astype(targets.dtype)


_MODEL_SPLIT = {"w_qkv": (None, "model"), "b_qkv": ("model",), "w_o": ("model", None),
                "w1": (None, "model"), "b1": ("model",), "w2": ("model", None)}


def partition_specs(params: dict[str, Any]) -> Any:
  """A pytree of ``PartitionSpec`` like ``params``: heads and the MLP width over ``"model"``, the rest
  replicated. Pass ``NamedSharding(mesh, spec)`` of each to ``jax.device_put`` / ``jax.jit``."""
  return split_by_name(params, _MODEL_SPLIT)


# ------------------------------------------------------------------------------ the model registry

def _init(key: jax.Array, config: Transformer, spec: DataSpec) -> tuple[Any, Any]:
  if spec.kind != "tokens":
    raise ValueError(f"transformer: needs token sequences (--task), got {spec.kind} data")
  return init_transformer(key, config, spec.vocab_size, spec.input_shape[0], spec.num_classes), {}


def _apply(params: Any, state: Any, inputs: jax.Array, config: Transformer, spec: DataSpec, *, train: bool,
           key: jax.Array | None, ops: Any) -> tuple[jax.Array, Any]:
  del spec, train, key  # no dropout, no batch statistics
  return transformer_apply(params, inputs, config, ops=ops), state


def _head(name: str, params: Any, outputs: jax.Array, targets: jax.Array, ops: Any,
          config: Transformer) -> tuple[jax.Array, jax.Array]:
  del name, config  # one head, without options: the fused linear cross-entropy
  return transformer_head(params, outputs, targets, ops)


_HELP = {"layers": "transformer blocks", "width": "model width D (the residual stream)",
         "heads": "attention heads (D must be a multiple)", "mlp_width": "hidden width of each block's GELU MLP",
         "norm": "rms_norm or layer_norm, pre-norm", "block_size": "queries and keys per block of ops.attention"}
# Sized on this 2-core CPU so that `jaxbp train --model transformer --task reverse` reaches >= 99% exact
# match in under 2 minutes (docs/training.md): the 20,000 sequences of a task, constant-then-decaying lr.
TRAIN_DEFAULTS = {"lr": 3e-3, "epochs": 3, "batch_size": 64, "schedule": "warmup-cosine", "clip": 1.0}
register("transformer", Transformer, _init, _apply, losses=("cross-entropy",), data="tokens", head=_head,
         check=check, choices={"norm": NORMS}, help=_HELP, train_defaults=TRAIN_DEFAULTS,
         summary="decoder-only transformer (causal attention, GELU MLP, fused linear cross-entropy) for --task",
         partition_specs=partition_specs)
