"""The registry of model families: how training, ``jaxbp train`` and checkpoints reach every model.

A family is registered once, in its own module (``jaxbp/models/<family>.py``), by :func:`register`; the
module is imported by ``jaxbp/models/__init__.py``, so ``import jaxbp.models`` registers every family.
Nothing in ``jaxbp.train`` or ``jaxbp.cli`` names a model: both go through :func:`get`.

A new family, in one file ``jaxbp/models/<family>.py`` and one import line in ``jaxbp/models/__init__.py``:

- ``class <Family>(NamedTuple)``: its one config class, named as the family is (``MLP``, ``Linear``,
  ``CNN``, ``RNN``, ``LSTM``, ``Transformer``; a ``llama`` family's is ``Llama``), exported by
  ``jaxbp.models``. What ``init``/``apply`` build from it and the data may be a lower-level architecture
  of the family's own (``MLPConfig``, ``RecurrentConfig``: with the data's widths), made by one
  ``network(config, spec)`` in the family's file; it is not registered and no flag reaches it.
- ``def check(config) -> None``: the validation hook, always named ``check``, passed as ``check=check``;
  it raises ``ValueError`` naming the field (a lower-level architecture's own validator is ``check_network``).
- ``_init``, ``_apply`` (and ``_head``, ``partition_specs``, ...) as the contract below says, then
  ``register("<family>", <Family>, _init, _apply, ..., check=check, help=_HELP, summary=...)`` at the end
  of the file. ``tests/models/test_<family>.py`` tests it; every registry-wide test then covers it.

The contract (what a family provides; ``train`` calls nothing else)
--------------------------------------------------------------------
``config``: a ``NamedTuple`` class of the family's hyperparameters, every field with a default; the
  defaults are the family's defaults (``jaxbp train --model NAME`` with no other flag). It holds nothing that
  the data decides (input width, number of classes, vocabulary, sequence length): those come in ``spec``.
  Field types are plain: ``bool``, ``int``, ``float``, ``str``, ``tuple[int, ...]``, or ``float | None``.
  Each field becomes the ``jaxbp train`` flag ``--field-name`` (underscores as dashes; a ``bool`` is a
  switch, ``--x``/``--no-x``; a tuple is comma-separated); two families may share a field name only with
  the same type (the flag is shared: ``--dropout`` of the MLP and of the transformer). The config is
  hashable, so it can be a static argument of ``jax.jit``, and it is saved as JSON in every checkpoint.
``init(key, config, spec) -> (params, state)``: ``key`` a typed PRNG key; ``spec`` a :class:`DataSpec`.
  ``params`` is a pytree of float arrays. A *weight* is a leaf with two or more axes (a matrix, a kernel,
  an embedding table; :func:`is_weight`), and nothing else: weight decay and ``l2`` act on the weights
  only, and ``grad_flow`` lists their gradient norms; biases and norm scales (one axis) are never
  weights, whatever their names. ``state`` is the non-trained state (batch-norm running statistics),
  ``{}`` if none.
``apply(params, state, inputs, config, spec, *, train, key, ops[, segment_ids]) -> (outputs, state)``:
  ``train`` (bool, static): training mode (dropout, batch statistics). ``key``: a fresh PRNG key every
  training step, ``None`` in evaluation. ``ops``: the op namespace, ``jaxbp.ops`` (the hand-written rules)
  or ``jaxbp.ops.reference`` (``--autodiff``); every differentiable operation comes from it. Returns the
  new state (unchanged in evaluation). Shapes by ``spec.kind``:

  - ``"features"``: ``inputs`` float32 ``[N, *spec.input_shape]`` (``[N, D]`` for the digits and for
    ``.npz``/``.csv`` files; a CNN reshapes to images inside its apply), ``outputs`` logits ``[N, C]``.
  - ``"tokens"``: ``inputs`` int32 ``[N, T]`` ids in ``[0, spec.vocab_size)``, ``outputs`` logits
    ``[N, T, C]`` (``C = spec.num_classes``, the output vocabulary).
  ``segment_ids`` (keyword, only for a family registered with ``segments=True`` and only when the batch
  has them): int32 ``[N, T]``, which example each position belongs to in a packed row; a position may
  use only the positions of its own id (attention's ``segment_ids``).
``losses``: the loss heads it supports, the first its default: names from :data:`HEADS` (computed by
  ``train`` from the logits), or the family's own with a ``head``.
``head`` (optional) ``head(name, params, outputs, targets, ops, config) -> (losses, predictions)``: per-example
  (features) or per-position (tokens) losses and predicted classes, both shaped like ``targets``, for a
  head ``train`` cannot compute from logits (a fused linear cross-entropy whose ``outputs`` are the last
  hidden states); ``config`` is the family's config (the head's own options: a z-loss, label smoothing).
  Without it, ``outputs`` are logits and ``train`` applies the head named by ``--loss``.
``segments`` (optional, tokens) ``True`` when ``apply`` takes ``segment_ids``: only such a family trains on
  packed data (a data set with segment ids); ``train`` refuses packed data for any other.
``train_defaults`` (optional): ``{TrainConfig field: value}`` that ``jaxbp train --model NAME`` uses where
  the user typed no flag, e.g. gradient clipping on for a recurrent model (``{"clip": 1.0}``, note 004).
``time_grad_norms`` (optional, sequence models) ``time_grad_norms(params, state, batch, config, spec, ops)
  -> [T]``: the gradient norm reaching each time step's input; ``jaxbp train --grad-flow`` plots it.
``partition_specs`` (optional) ``partition_specs(params) -> specs``: a pytree of ``PartitionSpec`` shaped
  like ``params``, over the mesh axes ``"data"`` and ``"model"``, for ``--model-parallel N`` (the parameters
  are placed with ``NamedSharding`` of these and XLA's partitioner splits the computation). A family
  without it trains data parallel only.
``check`` (optional) ``check(config)``: raises ``ValueError`` naming the field; called before anything
  is compiled (field types and ``choices`` are checked by the registry itself).

The batch and the metric (computed by ``train``, never by the model)
---------------------------------------------------------------------
A batch is ``(inputs, targets)`` for ``"features"`` (targets int32 ``[N]``) and ``(inputs, targets,
mask)`` for ``"tokens"`` (targets int32 ``[N, T]``, mask float32 ``[N, T]``: 1 at the scored positions,
0 elsewhere, e.g. the prompt of a copy task). Packed token data (several examples per row) adds a fourth
array, ``(inputs, targets, mask, segment_ids)``: int32 ``[N, T]``, the same id at every position of one
example (ids are compared within a row only; padding has an id of its own and mask 0), passed to
``apply`` as ``segment_ids``. A data set for ``jaxbp.train.fit`` has ``x_train``, ``y_train``,
``x_test``, ``y_test`` (and ``mask_train``, ``mask_test`` for tokens; ``segments_train``,
``segments_test`` for packed tokens), ``name``, and, for tokens, ``spec`` (a :class:`DataSpec`); a
features data set without ``spec`` gets one from its shapes. The loss is the mean over scored positions
(Σ loss·mask / Σ mask); ``accuracy`` is the share of examples classified right (features) or of
sequences whose every scored position is right (tokens, exact match; with segment ids each example of a
row counts as one sequence), and tokens also report ``token_accuracy`` (the share of scored positions right).
"""

from collections.abc import Callable, Mapping
import types
import typing
from typing import Any, NamedTuple

HEADS = ("cross-entropy", "hinge")  # ops.softmax_cross_entropy, ops.multiclass_hinge on the logits
KINDS = ("features", "tokens")


class DataSpec(NamedTuple):
  """What the data decides about a model: the shapes it is built for.

  Attributes:
    kind: ``"features"`` (float inputs, one class per example) or ``"tokens"`` (int ids, one class per
      position, scored where the mask is 1).
    input_shape: one example's input shape: ``(D,)`` for features, ``(T,)`` for tokens.
    num_classes: the logits' last axis: classes (features) or the output vocabulary (tokens).
    vocab_size: tokens: inputs are ids in ``[0, vocab_size)``; 0 for features.
  """
  kind: str
  input_shape: tuple[int, ...]
  num_classes: int
  vocab_size: int = 0


class Family(NamedTuple):
  """One registered model family; see the module docstring for the contract of each field."""
  name: str
  config: Any           # the config NamedTuple class
  init: Callable[..., tuple[Any, Any]]
  apply: Callable[..., tuple[Any, Any]]
  losses: tuple[str, ...]
  data: str = "features"
  head: Callable[..., tuple[Any, Any]] | None = None
  check: Callable[[Any], None] | None = None
  choices: Mapping[str, tuple] = types.MappingProxyType({})
  help: Mapping[str, str] = types.MappingProxyType({})
  summary: str = ""
  train_defaults: Mapping[str, Any] = types.MappingProxyType({})
  time_grad_norms: Callable[..., Any] | None = None
  partition_specs: Callable[[Any], Any] | None = None
  segments: bool = False


def is_weight(leaf: Any) -> bool:
  """Whether a parameter leaf is a weight: two or more axes (the one meaning of "weight"; module docstring)."""
  return len(getattr(leaf, "shape", ())) >= 2


def dense_init(key: Any, fan_in: int, fan_out: int, scale: float = 1.0) -> Any:
  """A [fan_in, fan_out] float32 weight drawn from N(0, (scale / √fan_in)²): the transformers' linear layers."""
  import jax  # pylint: disable=import-outside-toplevel  (the registry itself needs no JAX)
  return jax.random.normal(key, (fan_in, fan_out), jax.numpy.float32) * (scale / fan_in ** 0.5)


def split_by_name(params: Any, split: Mapping[str, tuple]) -> Any:
  """A pytree of ``PartitionSpec`` like ``params`` for a family's ``partition_specs``: a leaf whose key is
  in ``split`` gets ``PartitionSpec(*split[key])`` (e.g. ``{"w1": (None, "model")}``), every other leaf is
  replicated."""
  import jax  # pylint: disable=import-outside-toplevel
  P = jax.sharding.PartitionSpec

  def spec(path, _):
    name = getattr(path[-1], "key", None)
    return P(*split[name]) if isinstance(name, str) and name in split else P()
  return jax.tree_util.tree_map_with_path(spec, params)


def weights_mask(params: Any) -> Any:
  """``params``' structure with ``True`` at the weights (:func:`is_weight`), ``False`` elsewhere (an optax mask)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.map(is_weight, params)


class ConfigError(ValueError):
  """A config field that cannot be used: ``field`` names it (``"lr"``, ``"model"``, ``"model.dropout"``,
  or an argument of ``jaxbp.train.fit`` such as ``"out_dir"``), ``reason`` says why, and the message is
  ``f"{field} {reason}"``. A caller with other names for the fields (``jaxbp train``'s flags) maps
  ``field`` to its own name and says ``reason`` after it."""

  def __init__(self, field: str, reason: str):
    super().__init__(f"{field} {reason}")
    self.field = field
    self.reason = reason


_FAMILIES: dict[str, Family] = {}
_SCALARS = (bool, int, float, str)


def field_types(cls: type) -> dict[str, Any]:
  """``{field: type}`` of a config ``NamedTuple`` class, from its annotations."""
  return typing.get_type_hints(cls)


def _supported(tp: Any) -> bool:
  if tp in _SCALARS or tp == tuple[int, ...]:
    return True
  args = typing.get_args(tp)
  return typing.get_origin(tp) in (typing.Union, types.UnionType) and set(args) == {float, type(None)}


def register(name: str, config: type, init: Callable[..., tuple[Any, Any]], apply: Callable[..., tuple[Any, Any]],
             *, losses: tuple[str, ...] = HEADS, data: str = "features",
             head: Callable[..., tuple[Any, Any]] | None = None, check: Callable[[Any], None] | None = None,
             choices: Mapping[str, tuple] | None = None, help: Mapping[str, str] | None = None,
             summary: str = "", train_defaults: Mapping[str, Any] | None = None,
             time_grad_norms: Callable[..., Any] | None = None,
             partition_specs: Callable[[Any], Any] | None = None, segments: bool = False) -> Family:
  """Registers a model family under ``name`` (see the module docstring); returns its :class:`Family`.

  Raises ValueError when the name is taken by another family, when a config field has no default or an
  unsupported type, when a field shares its name with another family's field of a different type, when
  ``data`` is not one of ``KINDS`` (or ``segments`` without tokens), or when a loss is neither in ``HEADS``
  nor served by ``head``.
  """
  fields = getattr(config, "_fields", None)
  if fields is None or set(getattr(config, "_field_defaults", {})) != set(fields):
    raise ValueError(f"register({name!r}): config must be a NamedTuple class with a default for every field")
  hints = field_types(config)
  for field, tp in hints.items():
    if not _supported(tp):
      raise ValueError(f"register({name!r}): field {field!r} has type {tp}; use bool, int, float, str,"
                       " tuple[int, ...] or float | None")
    for other in _FAMILIES.values():
      theirs = field_types(other.config).get(field)
      if other.name != name and theirs is not None and theirs != tp:
        raise ValueError(f"register({name!r}): field {field!r} is {tp} here but {theirs} in {other.name!r}")
  if data not in KINDS:
    raise ValueError(f"register({name!r}): data must be one of {KINDS}, got {data!r}")
  if not losses or (head is None and not set(losses) <= set(HEADS)):
    raise ValueError(f"register({name!r}): losses must be a non-empty subset of {HEADS} without a head,"
                     f" got {losses}")
  if segments and data != "tokens":
    raise ValueError(f"register({name!r}): segments=True needs data='tokens', got {data!r}")
  known = _FAMILIES.get(name)
  if known is not None and known.config is not config:
    raise ValueError(f"register: a model family named {name!r} is already registered")
  family = Family(name, config, init, apply, tuple(losses), data, head, check,
                  types.MappingProxyType(dict(choices or {})), types.MappingProxyType(dict(help or {})), summary,
                  types.MappingProxyType(dict(train_defaults or {})), time_grad_norms, partition_specs, segments)
  _FAMILIES[name] = family
  return family


def names() -> tuple[str, ...]:
  """The registered families' names, in registration order."""
  return tuple(_FAMILIES)


def get(name: str) -> Family:
  """The family registered as ``name``; ValueError listing the names otherwise."""
  if name not in _FAMILIES:
    raise ConfigError("model", f"must be one of {', '.join(_FAMILIES)}; got {name!r}")
  return _FAMILIES[name]


def family_of(config: Any) -> Family:
  """The family whose config class ``config`` is an instance of; ValueError otherwise."""
  for family in _FAMILIES.values():
    if type(config) is family.config:
      return family
  raise ConfigError("model", f"must be the config of a registered family ({', '.join(_FAMILIES)}), e.g."
                    f" jaxbp.models.MLP(); got {type(config).__name__} {config!r}")


def check_value(field: str, tp: Any, v: Any) -> Any:
  """``v`` as a value of type ``tp`` (JSON lists become tuples); :class:`ConfigError` naming ``field`` otherwise."""
  ok = {bool: lambda: isinstance(v, bool), int: lambda: isinstance(v, int) and not isinstance(v, bool),
        float: lambda: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda: isinstance(v, str)}
  if tp in ok:
    if not ok[tp]():
      raise ConfigError(field, f"must be {tp.__name__}, got {v!r}")
    return float(v) if tp is float else v
  if tp == tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or any(not isinstance(w, int) or isinstance(w, bool) for w in v):
      raise ConfigError(field, f"must be a list of integers, got {v!r}")
    return tuple(v)
  return None if v is None else check_value(field, float, v)


def check_config(config: Any) -> Family:
  """Checks a model config's field types and choices (:class:`ConfigError` naming the field), then the
  family's own ``check`` (ValueError); returns its family."""
  family = family_of(config)
  for field, tp in field_types(family.config).items():
    check_value(field, tp, getattr(config, field))
    allowed = family.choices.get(field)
    if allowed is not None and getattr(config, field) not in allowed:
      raise ConfigError(field, f"must be one of {', '.join(allowed)}; got {getattr(config, field)!r}")
  if family.check is not None:
    family.check(config)
  return family


def to_json(config: Any) -> dict[str, Any]:
  """``{"name": family, "config": {field: value}}`` (tuples as lists), what checkpoints store."""
  fields = {k: list(v) if isinstance(v, tuple) else v for k, v in config._asdict().items()}
  return {"name": family_of(config).name, "config": fields}


def from_json(doc: Any) -> Any:
  """The config :func:`to_json` wrote; ValueError naming what is wrong (a field left out takes its default)."""
  if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
    raise ValueError(f"model must be {{'name': ..., 'config': {{...}}}}, got {doc!r}")
  family = get(doc.get("name"))  # type: ignore[arg-type]
  hints = field_types(family.config)
  unknown = sorted(set(doc["config"]) - set(hints))
  if unknown:
    raise ValueError(f"model {family.name!r} has no field(s) {unknown}")
  return family.config(**{k: check_value(k, hints[k], v) for k, v in doc["config"].items()})
