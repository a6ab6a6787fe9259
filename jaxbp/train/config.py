"""The configuration of a training run: :class:`TrainConfig`, its checks and its JSON form."""

from typing import Any, NamedTuple

from jaxbp import models
from jaxbp.models import ConfigError
from jaxbp.train.optim import OPTIMIZERS
from jaxbp.train.optim import SCHEDULES

__all__ = ["DTYPES", "MAX_SEED", "ConfigError", "TrainConfig", "check_config"]

DTYPES = ("float32", "bfloat16")  # the dtype the model computes in; parameters and optimiser state stay float32
MAX_SEED = 2**32 - 1  # jax.random.key(2**32) is key(0): a larger seed would silently repeat a smaller one's run


class TrainConfig(NamedTuple):
  """Everything that decides a run's numbers; saved in every checkpoint and in ``metrics.json``.

  Attributes:
    model: the model, as the config of a registered family (``jaxbp.models.names()``): ``models.MLP(...)``
      (hidden layers), ``models.Linear()`` (softmax regression, or a linear SVM with ``loss="hinge"``,
      note 001), or another family's; its fields are the family's (``jaxbp.models.register``).
    loss: a head the family supports: ``"cross-entropy"`` (``ops.softmax_cross_entropy``) or ``"hinge"``
      (``ops.multiclass_hinge``), over scored positions for sequence models.
    optimizer: one of ``OPTIMIZERS`` (optax; momentum 0.9 for momentum/nesterov).
    lr: peak learning rate.
    schedule: ``constant``; ``cosine`` (lr → 0 over the run); ``warmup`` (linear 0 → lr over the first
      10% of updates, then constant); ``warmup-cosine`` (that warm-up, then cosine decay to 0).
    epochs: passes over the training set.
    batch_size: examples per step (per micro-batch with ``accumulate``); the last partial batch of each
      epoch is dropped (reshuffled every epoch, so no example is left out for good; ``fit`` warns).
    weight_decay: ``None`` for the optimiser's default (1e-4 for adamw, 0 otherwise). adamw: decoupled
      decay θ ← θ − lr·wd·θ. Others: ``optax.add_decayed_weights`` adds wd·θ to the gradient, i.e. L2
      regularisation (wd/2)‖θ‖² passed through the optimiser's scaling. Weights only, not biases/γ/β.
    l2: λ of ``ops.l2_penalty`` (λ/2·Σ‖W‖² added to the loss, weights only), note 001's regulariser.
    clip: global-norm gradient clipping threshold (``optax.clip_by_global_norm``); 0 disables it.
    accumulate: micro-batches per update (``optax.MultiSteps``); 1 disables it.
    seed: seeds initialisation, dropout and the shuffling; 0 to 2³² − 1.
    autodiff: train with ``jax.grad`` of ``jaxbp.ops.reference`` instead of the manual rules.
    grad_flow: record each weight matrix's gradient norm per epoch (``layer_grad_norms`` in the history).
    model_parallel: N, the size of the mesh's ``"model"`` axis: the devices form a (devices/N, N) mesh
      ``("data", "model")``, the parameters are split over ``"model"`` as the family's ``partition_specs``
      say and the batch over ``"data"``; 1 is data parallel only. Families without ``partition_specs``
      take 1 only.
    dtype: what the model computes in, one of ``DTYPES``. ``"bfloat16"``: the parameters (and the optimiser's
      state) stay float32; inside the step they and the float inputs are cast to bfloat16 at the model's
      boundary, so every activation is bfloat16 (each rule computes in float32 and rounds once), the loss
      and metrics come back float32, and the gradients are float32 (the cast's VJP) for the update.
  """
  model: Any = models.MLP()
  loss: str = "cross-entropy"
  optimizer: str = "adam"
  lr: float = 2e-3
  schedule: str = "cosine"
  epochs: int = 40
  batch_size: int = 64
  weight_decay: float | None = None
  l2: float = 0.0
  clip: float = 0.0
  accumulate: int = 1
  seed: int = 0
  autodiff: bool = False
  grad_flow: bool = False
  model_parallel: int = 1
  dtype: str = "float32"

  @property
  def family(self) -> models.Family:
    """The registered family of ``model``."""
    return models.family_of(self.model)

  def to_json(self) -> dict[str, Any]:
    """The config as JSON: the model as ``{"name", "config"}``, tuples as lists."""
    return {**self._asdict(), "model": models.to_json(self.model)}

  @classmethod
  def from_json(cls, doc: Any) -> "TrainConfig":
    """The config :meth:`to_json` wrote; ValueError naming the field that is missing, unknown or mistyped."""
    if not isinstance(doc, dict):
      raise ValueError(f"config must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(cls._fields))
    missing = sorted(set(cls._fields) - set(doc) - set(_ADDED))
    doc = {**_ADDED, **doc}  # a field added since the checkpoint was written takes its old behaviour
    if unknown or missing:
      wrong = [f"unknown field(s) {unknown}"] * bool(unknown) + [f"missing field(s) {missing}"] * bool(missing)
      raise ValueError(f"config: {', '.join(wrong)}")
    hints = models.field_types(cls)
    values = {k: models.check_value(k, hints[k], v) for k, v in doc.items() if k != "model"}
    return cls(model=models.from_json(doc["model"]), **values)


# fields newer than some saved configs, with the value older runs had
_ADDED = {"model_parallel": 1, "dtype": "float32"}


def check_config(config: TrainConfig) -> models.Family:
  """Raises :class:`ConfigError` naming the field when ``config`` is not usable; returns the model's family.

  Checks the types of every field, the choices, the ranges, and the model's config: a field of it is named
  ``model.<field>`` (``model.dropout``), a failure of its family's own check ``model``.
  """
  family = models.family_of(config.model)
  try:
    models.check_config(config.model)
  except ConfigError as e:
    raise ConfigError(f"model.{e.field}", e.reason) from None
  except ValueError as e:
    raise ConfigError("model", f"{family.name}: {e}") from None
  hints = models.field_types(TrainConfig)
  for field in TrainConfig._fields[1:]:
    models.check_value(field, hints[field], getattr(config, field))
  choices = {"loss": family.losses, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPES}
  for field, allowed in choices.items():
    if getattr(config, field) not in allowed:
      raise ConfigError(field, f"must be one of {', '.join(allowed)}"
                        f"{' for model ' + family.name if field == 'loss' else ''}; got {getattr(config, field)!r}")
  for field in ("lr", "epochs", "batch_size", "accumulate", "model_parallel"):
    if not getattr(config, field) > 0:
      raise ConfigError(field, f"must be positive, got {getattr(config, field)}")
  for field in ("l2", "clip", "weight_decay"):
    v = getattr(config, field)
    if v is not None and not v >= 0:
      raise ConfigError(field, f"must be >= 0, got {v}")
  if config.model_parallel > 1 and family.partition_specs is None:
    raise ConfigError("model_parallel", f"{config.model_parallel} needs a model family that splits its parameters"
                      f" (partition_specs); {family.name} has none, so it trains data parallel only")
  if not 0 <= config.seed <= MAX_SEED:
    raise ConfigError("seed", f"must be between 0 and {MAX_SEED} (2**32 - 1), got {config.seed}")
  return family
