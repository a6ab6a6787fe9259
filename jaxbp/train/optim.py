"""The optimisers of ``jaxbp train``, all optax: update rules by name, weight decay on weights only,
global-norm clipping, gradient accumulation and learning-rate schedules. No update rule is written here;
``jaxbp.train`` re-exports these names. What each option means is documented on ``TrainConfig``.
"""

import optax

from jaxbp import models

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "warmup", "warmup-cosine")


def make_schedule(config, num_updates):
  """The learning-rate schedule over ``num_updates`` optimiser updates (optax schedules)."""
  lr, total = config.lr, max(int(num_updates), 1)
  warmup = max(total // 10, 1)
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total)
  if config.schedule == "warmup":
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=0.0)


def make_optimizer(config, num_steps):
  """The optax transformation of a run that takes ``num_steps`` micro-steps (see :class:`TrainConfig`)."""
  lr = make_schedule(config, num_steps // config.accumulate)
  name, wd = config.optimizer, config.weight_decay
  base = {
      "sgd": lambda: optax.sgd(lr),
      "momentum": lambda: optax.sgd(lr, momentum=0.9),
      "nesterov": lambda: optax.sgd(lr, momentum=0.9, nesterov=True),
      "adam": lambda: optax.adam(lr),
      "adamw": lambda: optax.adamw(lr, weight_decay=1e-4 if wd is None else wd, mask=models.weights_mask),
      "rmsprop": lambda: optax.rmsprop(lr),
      "adagrad": lambda: optax.adagrad(lr),
  }[name]()
  parts = []
  if config.clip > 0:
    parts.append(optax.clip_by_global_norm(config.clip))
  if name != "adamw" and wd:
    parts.append(optax.add_decayed_weights(wd, mask=models.weights_mask))
  opt = optax.chain(*parts, base) if parts else base
  return optax.MultiSteps(opt, every_k_schedule=config.accumulate) if config.accumulate > 1 else opt
