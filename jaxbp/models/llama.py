"""A Llama-style decoder over token ids, built from ``ops`` (hand-written rules or their references).

    x⁰ = E_tok[ids]                                      (``ops.embedding``; no learned positions)
    for each of ``layers`` blocks (pre-norm, no biases):
      q, k, v = split(rms_norm(x)·W_qkv)                 (heads query heads, kv_heads key/value heads)
      x ← x + attention(rope(q), rope(k), v, causal, window, softcap, segment_ids)·W_o
      x ← x + swiglu(rms_norm(x)·W_gate, rms_norm(x)·W_up)·W_down
    h = rms_norm(x)   → the fused head: linear_softmax_cross_entropy(h, W_out, targets, z_loss, ...)

Every step is a rule: ``ops.rms_norm``, ``ops.rope`` (positions 0..T−1 of the row: rotary angles are
relative, so a packed row's later examples need no restart), ``ops.attention`` with grouped-query
attention (query head h reads kv head h // (heads / kv_heads); K and V are never repeated), an optional
sliding ``window`` and score ``softcap``, and ``segment_ids`` when the batch has them (packed rows: a
token attends only to its own example), ``ops.swiglu``, and ``ops.linear_softmax_cross_entropy`` with
``z_loss``, ``label_smoothing`` and ``logit_softcap``, which never holds the [N·T, vocabulary] logits.

Layout: W_qkv is [D, kv_heads·(group + 2)·Dh] with the columns ordered (kv head, [the group's query
heads, k, v], dim), so splitting its columns over devices splits whole groups; W_gate_up is [D, 2·F] with
the columns ordered (hidden unit, gate/up), so splitting them keeps each unit's gate and up together.
:func:`partition_specs` splits those columns and W_o's, W_down's rows over the mesh axis ``"model"``
(Megatron's layout, left to XLA's partitioner); the batch goes over ``"data"``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.models._registry import DataSpec
from jaxbp.models._registry import dense_init
from jaxbp.models._registry import register
from jaxbp.models._registry import split_by_name
from jaxbp.models.transformer import transformer_head


class Llama(NamedTuple):
  """Hyperparameters of :func:`llama_apply`; the vocabulary and the length come from the data.

  Attributes:
    layers: decoder blocks.
    width: the model width D (the residual stream); a multiple of ``heads``, head width Dh = D / heads even.
    heads: query heads.
    kv_heads: key/value heads, dividing ``heads`` (grouped-query attention; 1 is multi-query).
    mlp_width: the SwiGLU MLP's hidden width F.
    window: 0 for full causal attention, else a sliding window: query i sees keys i − window < j ≤ i.
    softcap: attention scores become softcap·tanh(scores / softcap) (Gemma 2); ``None`` for none.
    rope_base: the base of RoPE's frequencies.
    z_loss: weight of PaLM's auxiliary z·logsumexp(logits)² per position.
    label_smoothing: torch's label smoothing of the cross-entropy, in [0, 1].
    logit_softcap: the head's logits become c·tanh(logits / c); ``None`` for none.
    block_size: queries and keys per block of ``ops.attention``.
  """
  layers: int = 2
  width: int = 64
  heads: int = 4
  kv_heads: int = 2
  mlp_width: int = 192
  window: int = 0
  softcap: float | None = None
  rope_base: float = 10000.0
  z_loss: float = 0.0
  label_smoothing: float = 0.0
  logit_softcap: float | None = None
  block_size: int = 512


def check(config: Llama) -> None:
  """Raises ValueError naming the field that makes no model."""
  for field in ("layers", "width", "heads", "kv_heads", "mlp_width", "block_size"):
    if getattr(config, field) < 1:
      raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
  if config.width % config.heads or (config.width // config.heads) % 2:
    raise ValueError(f"width ({config.width}) must be a multiple of heads ({config.heads}) with an even head"
                     f" width (RoPE rotates pairs); got head width {config.width / config.heads:g}")
  if config.heads % config.kv_heads:
    raise ValueError(f"kv_heads ({config.kv_heads}) must divide heads ({config.heads})")
  if config.window < 0:
    raise ValueError(f"window must be >= 0 (0: no window), got {config.window}")
  for field in ("softcap", "logit_softcap"):
    if getattr(config, field) is not None and not getattr(config, field) > 0:
      raise ValueError(f"{field} must be > 0 (or None), got {getattr(config, field)}")
  if not config.rope_base > 0:
    raise ValueError(f"rope_base must be > 0, got {config.rope_base}")
  if not config.z_loss >= 0:
    raise ValueError(f"z_loss must be >= 0, got {config.z_loss}")
  if not 0 <= config.label_smoothing <= 1:
    raise ValueError(f"label_smoothing must be in [0, 1], got {config.label_smoothing}")


def init_llama(key: jax.Array, config: Llama, vocab_size: int, num_classes: int) -> dict[str, Any]:
  """Parameters for ids in [0, vocab_size) and ``num_classes`` outputs (any sequence length: no positions).

  The residual branches' output weights (W_o, W_down) are scaled by 1/√(2·layers); norm scales are 1.
  """
  check(config)
  d, f, dh = config.width, config.mlp_width, config.width // config.heads
  qkv = (config.heads + 2 * config.kv_heads) * dh
  keys = jax.random.split(key, 2 + config.layers)
  depth = 1.0 / (2.0 * config.layers) ** 0.5
  blocks = []
  for k in keys[2:]:
    k1, k2, k3, k4 = jax.random.split(k, 4)
    blocks.append({"norm1": jnp.ones((d,), jnp.float32), "w_qkv": dense_init(k1, d, qkv),
                   "w_o": dense_init(k2, config.heads * dh, d, depth),
                   "norm2": jnp.ones((d,), jnp.float32), "w_gate_up": dense_init(k3, d, 2 * f),
                   "w_down": dense_init(k4, f, d, depth)})
  return {"embed": jax.random.normal(keys[0], (vocab_size, d), jnp.float32) * 0.5, "blocks": blocks,
          "norm_out": jnp.ones((d,), jnp.float32), "w_out": dense_init(keys[1], d, num_classes)}


def _attention(x, p, config, segment_ids, ops):
  n, t, _ = x.shape
  dh, group = config.width // config.heads, config.heads // config.kv_heads
  qkv = ops.matmul(ops.rms_norm(x, p["norm1"]), p["w_qkv"]).reshape(n, t, config.kv_heads, group + 2, dh)
  q = qkv[:, :, :, :group].reshape(n, t, config.heads, dh)
  q, k = ops.rope(q, base=config.rope_base), ops.rope(qkv[:, :, :, group], base=config.rope_base)
  a = ops.attention(q, k, qkv[:, :, :, group + 1], causal=True, window=config.window or None,
                    softcap=config.softcap, segment_ids=segment_ids, block_size=config.block_size)
  return ops.matmul(a.reshape(n, t, config.heads * dh), p["w_o"])


def _mlp(x, p, ops):
  gate_up = ops.matmul(ops.rms_norm(x, p["norm2"]), p["w_gate_up"])
  gate_up = gate_up.reshape(*x.shape[:-1], -1, 2)
  return ops.matmul(ops.swiglu(gate_up[..., 0], gate_up[..., 1]), p["w_down"])


def llama_apply(params: dict[str, Any], ids: jax.Array, config: Llama, *, ops: Any,
                segment_ids: jax.Array | None = None) -> jax.Array:
  """The last hidden states h = rms_norm(x_L) [N, T, width] for int ids [N, T].

  ``segment_ids``: optional int [N, T]; tokens attend only to earlier tokens of the same id (packed rows).
  """
  pairs = None if segment_ids is None else (segment_ids, segment_ids)
  x = ops.embedding(ids, params["embed"])
  for p in params["blocks"]:
    x = ops.add(x, _attention(x, p, config, pairs, ops))
    x = ops.add(x, _mlp(x, p, ops))
  return ops.rms_norm(x, params["norm_out"])


def llama_head(params: dict[str, Any], hidden: jax.Array, targets: jax.Array, config: Llama, ops: Any,
               chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """The transformer's head (per-position losses [N, T] of the fused linear cross-entropy, predicted classes
  [N, T]) with the config's z-loss, label smoothing and logit softcap."""
  return transformer_head(params, hidden, targets, ops, chunk_size, z_loss=config.z_loss,
                          label_smoothing=config.label_smoothing, softcap=config.logit_softcap)


_MODEL_SPLIT = {"w_qkv": (None, "model"), "w_o": ("model", None), "w_gate_up": (None, "model"),
                "w_down": ("model", None)}


def partition_specs(params: dict[str, Any]) -> Any:
  """A pytree of ``PartitionSpec`` like ``params``: the attention's groups and the MLP's hidden units over
  ``"model"``, the rest replicated (as the transformer's)."""
  return split_by_name(params, _MODEL_SPLIT)


# ------------------------------------------------------------------------------ the model registry

def _init(key: jax.Array, config: Llama, spec: DataSpec) -> tuple[Any, Any]:
  if spec.kind != "tokens":
    raise ValueError(f"llama: needs token sequences (--task), got {spec.kind} data")
  return init_llama(key, config, spec.vocab_size, spec.num_classes), {}


def _apply(params: Any, state: Any, inputs: jax.Array, config: Llama, spec: DataSpec, *, train: bool,
           key: jax.Array | None, ops: Any, segment_ids: jax.Array | None = None) -> tuple[jax.Array, Any]:
  del spec, train, key  # no dropout, no batch statistics
  return llama_apply(params, inputs, config, ops=ops, segment_ids=segment_ids), state


def _head(name: str, params: Any, outputs: jax.Array, targets: jax.Array, ops: Any,
          config: Llama) -> tuple[jax.Array, jax.Array]:
  del name  # one head: the fused linear cross-entropy
  return llama_head(params, outputs, targets, config, ops)


_HELP = {"kv_heads": "key/value heads of grouped-query attention (divides --heads; 1: multi-query)",
         "window": "sliding attention window (0: none)",
         "softcap": "attention scores softcap·tanh(s/softcap) (Gemma 2)",
         "rope_base": "base of RoPE's rotary frequencies",
         "z_loss": "weight of the z-loss z·logsumexp² (PaLM)",
         "label_smoothing": "label smoothing of the cross-entropy (torch's)",
         "logit_softcap": "the head's logits c·tanh(logits/c)"}
# Sized on this 2-core CPU so that `jaxbp train --model llama --task reverse` reaches >= 99% exact match in
# under 2 minutes quiet (docs/training.md).
TRAIN_DEFAULTS = {"lr": 3e-3, "epochs": 3, "batch_size": 64, "schedule": "warmup-cosine", "clip": 1.0}
register("llama", Llama, _init, _apply, losses=("cross-entropy",), data="tokens", head=_head, check=check,
         help=_HELP, train_defaults=TRAIN_DEFAULTS, segments=True, partition_specs=partition_specs,
         summary="Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU, fused linear"
                 " cross-entropy with z-loss) for --task")
