"""Training on the manual rules: optimisers by name through optax, a jitted step, evaluation, ``fit``.

The loop is note 001's and note 004's: forward, loss, backward (every op's hand-written rule), optax update,
over shuffled mini-batches. The step is one jitted function ``step(state, batch) -> (state, metrics)`` whose
state is a :class:`TrainState`; it runs unchanged on one device or many (data parallel: batch sharded over a
``Mesh``, state replicated; see :func:`make_mesh`).
"""

import concurrent.futures
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import checkpoint as ckpt
from jaxbp import ops as _ops
from jaxbp._optimizers import OPTIMIZERS
from jaxbp._optimizers import SCHEDULES
from jaxbp._optimizers import make_optimizer
from jaxbp.models import mlp as _mlp

LOSSES = ("cross-entropy", "hinge")
MODELS = ("mlp", "linear")
CHECKPOINT = "checkpoint.npz"


class TrainConfig(NamedTuple):
  """Everything that decides a run's numbers; saved in every checkpoint and in ``metrics.json``.

  Attributes:
    model: ``"mlp"`` (hidden layers ``hidden``) or ``"linear"`` (no hidden layer: softmax regression, or
      a linear SVM with ``loss="hinge"``, note 001).
    hidden: widths of the hidden layers.
    activation, init, residual, batch_norm, dropout: see :class:`jaxbp.models.MLPConfig`.
    loss: ``"cross-entropy"`` (``ops.softmax_cross_entropy``) or ``"hinge"`` (``ops.multiclass_hinge``).
    optimizer: one of ``OPTIMIZERS`` (optax; momentum 0.9 for momentum/nesterov).
    lr: peak learning rate.
    schedule: ``constant``; ``cosine`` (lr → 0 over the run); ``warmup`` (linear 0 → lr over the first
      10% of updates, then constant); ``warmup-cosine`` (that warm-up, then cosine decay to 0).
    epochs: passes over the training set.
    batch_size: examples per step (per micro-batch with ``accumulate``); the last partial batch of each
      epoch is dropped (reshuffled every epoch, so no example is left out for good).
    weight_decay: ``None`` for the optimiser's default (1e-4 for adamw, 0 otherwise). adamw: decoupled
      decay θ ← θ − lr·wd·θ. Others: ``optax.add_decayed_weights`` adds wd·θ to the gradient, i.e. L2
      regularisation (wd/2)‖θ‖² passed through the optimiser's scaling. Weights only, not biases/γ/β.
    l2: λ of ``ops.l2_penalty`` (λ/2·Σ‖W‖² added to the loss, weights only), note 001's regulariser.
    clip: global-norm gradient clipping threshold (``optax.clip_by_global_norm``); 0 disables it.
    accumulate: micro-batches per update (``optax.MultiSteps``); 1 disables it.
    seed: seeds initialisation, dropout and the shuffling.
    autodiff: train with ``jax.grad`` of ``jaxbp.ops.reference`` instead of the manual rules.
    grad_flow: record each weight matrix's gradient norm per epoch (``layer_grad_norms`` in the history).
  """
  model: str = "mlp"
  hidden: tuple = (256, 256)
  activation: str = "relu"
  init: str = "he"
  residual: bool = False
  batch_norm: bool = False
  dropout: float = 0.2
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

  def to_json(self):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in self._asdict().items()}

  @classmethod
  def from_json(cls, d):
    d = dict(d)
    d["hidden"] = tuple(d.get("hidden", ()))
    unknown = sorted(set(d) - set(cls._fields))
    if unknown:
      raise ValueError(f"TrainConfig: unknown field(s) {unknown}")
    return cls(**d)


class TrainState(NamedTuple):
  """The whole state of a run; a pytree, checkpointed as is."""
  params: Any        # model parameters, e.g. {"layers": [{"w": [D_in, D_out], "b": [D_out]}, ...]}
  model_state: Any   # batch-norm running statistics ({} without batch norm)
  opt_state: Any     # optax state, structure decided by the optimiser chain
  step: jax.Array    # int32 [], micro-steps taken
  key: jax.Array     # typed PRNG key [], split once per step for dropout


class NonFiniteError(RuntimeError):
  """Training produced a NaN/inf loss or gradient; the parameters were not updated with it."""


class FitResult(NamedTuple):
  state: TrainState
  history: list        # one dict per epoch: epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds
  compile_seconds: float


def check_config(config):
  """Raises ValueError naming the field when ``config`` is not usable."""
  choices = {"model": MODELS, "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
  for field, allowed in choices.items():
    if getattr(config, field) not in allowed:
      raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {getattr(config, field)!r}")
  positive = {"lr": config.lr, "epochs": config.epochs, "batch_size": config.batch_size,
              "accumulate": config.accumulate}
  for field, v in positive.items():
    if not v > 0:
      raise ValueError(f"{field} must be positive, got {v}")
  for field in ("l2", "clip", "weight_decay"):
    v = getattr(config, field)
    if v is not None and not v >= 0:
      raise ValueError(f"{field} must be >= 0, got {v}")
  if config.model == "mlp" and not config.hidden:
    raise ValueError("hidden must name at least one width for model 'mlp' (or use model 'linear')")
  _mlp.check_config(mlp_config(config, 1, 2))  # activation, init, widths, dropout: the model's own checks


def mlp_config(config, num_features, num_classes):
  """The :class:`MLPConfig` of a run on data with ``num_features`` inputs and ``num_classes`` classes."""
  hidden = tuple(config.hidden) if config.model == "mlp" else ()
  return _mlp.MLPConfig((num_features, *hidden, num_classes), config.activation, config.init,
                        config.residual, config.batch_norm, config.dropout)


def make_loss_fn(net, config, *, ops=_ops):
  """``loss_fn(params, model_state, batch, key) -> (loss, (model_state, metrics))`` for classification.

  ``batch`` is ``(x [B, D], y int [B])``; the loss is the mean over the batch of the chosen loss, plus
  ``ops.l2_penalty`` of the weights when ``config.l2 > 0``.
  """
  def loss_fn(params, model_state, batch, key):
    x, y = batch
    logits, model_state = _mlp.mlp_apply(params, x, net, state=model_state, train=True, key=key, ops=ops)
    loss = _data_loss(ops, config.loss, logits, y)
    if config.l2 > 0:
      loss = loss + ops.l2_penalty([layer["w"] for layer in params["layers"]], config.l2)
    return loss, (model_state, {"loss": loss, "accuracy": _accuracy(logits, y)})
  return loss_fn


def _data_loss(ops, name, logits, y):
  if name == "hinge":
    return ops.multiclass_hinge(logits, y)
  return ops.softmax_cross_entropy(logits, y)


def _accuracy(logits, y):
  return jnp.mean(jnp.argmax(logits, axis=-1) == y)


def _all_finite(*trees):
  leaves = jax.tree_util.tree_leaves(trees)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def default_donate():
  """Donate the state's buffers on GPU/TPU, not on CPU: there it made steps slower (issue 5: defensive
  copies and a >32 MiB temporary crossing glibc's mmap threshold, about 8,000 page faults a step)."""
  return jax.default_backend() != "cpu"


def layer_grad_norms(grads):
  """‖∂L/∂W‖ (Frobenius) of every weight matrix in ``grads``, input layer first; works under ``jit``.

  Args:
    grads: a gradient pytree shaped like the parameters (e.g. ``{"layers": [{"w", "b"}, ...]}``).

  Returns:
    ``{path: norm}`` in pytree order for every leaf with two or more axes (the weights; biases and
    normalisation scales are left out), where ``path`` is the leaf's key path, e.g. ``['layers'][3]['w']``.
  """
  leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
  return {jax.tree_util.keystr(path): jnp.linalg.norm(leaf) for path, leaf in leaves if jnp.ndim(leaf) >= 2}


def make_train_step(loss_fn, optimizer, *, donate=None, mesh=None, grad_flow=False):
  """The jitted training step ``step(state, batch) -> (state, metrics)``.

  One forward, one backward through the ops' rules (``jax.value_and_grad`` of ``loss_fn``), one optax
  update. When the loss or any gradient is not finite, the returned state equals the incoming one except
  for ``step`` and ``key`` (``metrics["finite"]`` is False): NaN never reaches the parameters.

  Args:
    loss_fn: as returned by :func:`make_loss_fn`.
    optimizer: an optax ``GradientTransformation``.
    donate: donate the incoming state's buffers; ``None`` decides by backend (:func:`default_donate`).
    mesh: a ``Mesh`` with axis ``"data"`` for data parallelism (batch sharded, state replicated).
    grad_flow: also return ``metrics["layer_grad_norms"]``, :func:`layer_grad_norms` as a vector.
  """
  def step(state, batch):
    key, subkey = jax.random.split(state.key)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, subkey)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = _all_finite(loss, grads)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    state = TrainState(keep(params, state.params), keep(model_state, state.model_state),
                       keep(opt_state, state.opt_state), state.step + 1, key)
    metrics = dict(metrics, finite=finite)
    if grad_flow:
      metrics["layer_grad_norms"] = jnp.stack(list(layer_grad_norms(grads).values()))
    return state, metrics

  donate = default_donate() if donate is None else donate
  kwargs = {"donate_argnums": (0,)} if donate else {}
  if mesh is not None:
    replicated, sharded = _shardings(mesh)
    kwargs.update(in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))
  return jax.jit(step, **kwargs)


def make_eval_fn(net, config, *, ops=_ops):
  """Jitted ``evaluate(params, model_state, x, y) -> {"loss", "accuracy"}`` in evaluation mode."""
  def evaluate(params, model_state, x, y):
    logits, _ = _mlp.mlp_apply(params, x, net, state=model_state, train=False, ops=ops)
    return {"loss": _data_loss(ops, config.loss, logits, y), "accuracy": _accuracy(logits, y)}
  return jax.jit(evaluate)


def init_state(config, net, optimizer):
  """The initial :class:`TrainState` of a run (parameters from ``fold_in(key(seed), 0)``)."""
  root = jax.random.key(config.seed)
  params, model_state = _mlp.init_mlp(jax.random.fold_in(root, 0), net)
  return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32),
                    jax.random.fold_in(root, 1))


def make_mesh(num_devices):
  """A 1-D ``Mesh`` named ``"data"`` over the first ``num_devices`` devices (all processes' devices)."""
  devices = jax.devices()
  if not 1 <= num_devices <= len(devices):
    raise ValueError(f"devices must be between 1 and {len(devices)} (the devices JAX sees), got {num_devices}")
  return jax.sharding.Mesh(np.array(devices[:num_devices]), ("data",))


def _shardings(mesh):
  P = jax.sharding.PartitionSpec
  return jax.sharding.NamedSharding(mesh, P()), jax.sharding.NamedSharding(mesh, P("data"))


def _place(tree, sharding):
  """Puts host arrays on devices with ``sharding``; every process must hold the same global values."""
  if sharding is None:
    return jax.device_put(tree)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(one, tree)


def epoch_order(seed, epoch, num_examples, batch_size):
  """Example indices of one epoch, ``[num_batches, batch_size]``: a permutation drawn from NumPy's
  counter-based ``default_rng([seed, epoch])``, so any epoch's order is known without replaying the earlier
  ones (what ``--resume`` needs); the last ``num_examples % batch_size`` examples of it are dropped."""
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  num_batches = num_examples // batch_size
  return order[:num_batches * batch_size].reshape(num_batches, batch_size)


def _check_resume(config, saved, path):
  """Raises ValueError unless ``config`` continues ``saved`` (only ``epochs`` may grow, constant lr only)."""
  if saved._replace(epochs=config.epochs) != config:
    diff = [f"{f}={getattr(saved, f)!r} (now {getattr(config, f)!r})"
            for f in TrainConfig._fields if f != "epochs" and getattr(saved, f) != getattr(config, f)]
    raise ValueError(f"cannot resume {path}: it was trained with {', '.join(diff)}")
  if config.epochs != saved.epochs and config.schedule != "constant":
    raise ValueError(f"cannot resume {path} with epochs={config.epochs}: its {config.schedule} schedule was"
                     f" built for epochs={saved.epochs}")


def _summarise(metrics, first_step, epoch, path, last_saved):
  """Epoch means of the step metrics; NonFiniteError at the first non-finite step."""
  m = jax.device_get(metrics)
  finite = np.array([s["finite"] for s in m])
  if not finite.all():
    bad = first_step + int(np.argmin(finite)) + 1
    where = (f"last good checkpoint: {path} (after epoch {last_saved})" if last_saved
             else "no checkpoint was written before it")
    raise NonFiniteError(f"non-finite loss or gradient at step {bad} (epoch {epoch}); the parameters were not"
                         f" updated with it; {where}. Try a lower --lr or --clip 1.0")
  means = {k: float(np.mean([s[k] for s in m])) for k in ("loss", "accuracy")}
  if "layer_grad_norms" in m[0]:
    means["layer_grad_norms"] = np.mean([s["layer_grad_norms"] for s in m], axis=0).tolist()
  return means


def _compile(config, data, net, mesh, resume_from):
  """Lowers the initialiser, the step and the evaluation, then compiles them concurrently (XLA releases
  the GIL, so on two cores this halves the wait); the initialiser at XLA's backend optimisation level 0,
  since it runs once. Returns ``(state, step_fn, eval_fn, test, seconds)``; with ``resume_from``, ``state``
  is ``(restored_state, checkpoint_meta)`` instead."""
  t0 = time.perf_counter()
  ops = _ops.reference if config.autodiff else _ops
  optimizer = make_optimizer(config, (data.x_train.shape[0] // config.batch_size) * config.epochs)
  init = jax.jit(lambda: init_state(config, net, optimizer))
  abstract = jax.eval_shape(init)
  replicated, sharded = _shardings(mesh) if mesh is not None else (None, None)
  test = _place((data.x_test, data.y_test), replicated)
  batch_spec = (jax.ShapeDtypeStruct((config.batch_size, net.sizes[0]), jnp.float32, sharding=sharded),
                jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=sharded))
  jobs = [
      (make_train_step(make_loss_fn(net, config, ops=ops), optimizer, mesh=mesh, grad_flow=config.grad_flow)
       .lower(abstract, batch_spec), {}),
      (make_eval_fn(net, config, ops=ops).lower(abstract.params, abstract.model_state, *test), {}),
  ]
  if resume_from is None:
    jobs.append((init.lower(), {"xla_backend_optimization_level": 0}))
  with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    compiled = list(pool.map(lambda job: job[0].compile(compiler_options=job[1]), jobs))
  state = ckpt.load(resume_from, abstract) if resume_from else compiled[2]()
  if resume_from:
    state = (_place(state[0], replicated), state[1])
  else:
    state = _place(state, replicated)
  return state, compiled[0], compiled[1], test, time.perf_counter() - t0


def fit(config, data, *, out_dir=None, resume=False, mesh=None, progress=None, on_epoch=None):
  """Trains a classifier on ``data`` (a :class:`jaxbp.data.Dataset`) as ``config`` says.

  Args:
    config: a :class:`TrainConfig`.
    data: train and test arrays; the test set is evaluated after every epoch.
    out_dir: if given, ``out_dir/checkpoint.npz`` is written (atomically) after every epoch.
    resume: continue from ``out_dir/checkpoint.npz`` (same config; ``epochs`` may grow with a constant
      schedule). The result equals an uninterrupted run's.
    mesh: a data-parallel ``Mesh`` from :func:`make_mesh`, or ``None`` for the default device.
    progress: ``progress(epoch, num_steps)`` returning a bar with ``update(n)``, ``set_postfix(dict)``
      and ``close()`` (a ``tqdm`` fits), or ``None``.
    on_epoch: called as ``on_epoch(record, state)`` after each epoch's checkpoint is written.

  Returns:
    A :class:`FitResult`. Raises :class:`NonFiniteError` on a NaN/inf loss or gradient.
  """
  check_config(config)
  n, batch = data.x_train.shape[0], config.batch_size
  if batch > n:
    raise ValueError(f"batch_size {batch} is larger than the {n} training examples")
  if mesh is not None and batch % mesh.size:
    raise ValueError(f"batch_size {batch} must be divisible by the number of devices ({mesh.size})")
  steps = n // batch
  net = mlp_config(config, data.num_features, data.num_classes)
  path = os.path.join(out_dir, CHECKPOINT) if out_dir else None
  if out_dir and not resume and jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
  state, step_fn, eval_fn, test, compile_seconds = _compile(config, data, net, mesh, path if resume else None)
  history, start = [], 0
  if resume:
    _check_resume(config, TrainConfig.from_json(state[1]["config"]), path)
    state, history, start = state[0], state[1]["history"], state[1]["epoch"]
  sharded = _shardings(mesh)[1] if mesh is not None else None
  for epoch in range(start, config.epochs):
    t0, metrics = time.perf_counter(), []
    bar = progress(epoch + 1, steps) if progress else None
    first_step = epoch * steps
    for idx in epoch_order(config.seed, epoch, n, batch):
      state, m = step_fn(state, _place((data.x_train[idx], data.y_train[idx]), sharded))
      metrics.append(m)
      if bar is not None:
        bar.update(1)
    train = _summarise(metrics, first_step, epoch + 1, path, epoch if path else 0)
    test_m = jax.device_get(eval_fn(state.params, state.model_state, *test))
    record = {"epoch": epoch + 1, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
              "test_loss": float(test_m["loss"]), "test_accuracy": float(test_m["accuracy"]),
              "seconds": time.perf_counter() - t0}
    if "layer_grad_norms" in train:
      record["layer_grad_norms"] = train["layer_grad_norms"]
    history.append(record)
    if bar is not None:
      bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{record['train_accuracy']:.3f}",
                      test_acc=f"{record['test_accuracy']:.3f}")
      bar.close()
    if path is not None and jax.process_index() == 0:
      ckpt.save(path, state, {"config": config.to_json(), "epoch": epoch + 1, "history": history})
    if on_epoch is not None:
      on_epoch(record, state)
  return FitResult(state, history, compile_seconds)


def write_metrics(path, config, history, **extra):
  """Writes ``metrics.json``: the config, the per-epoch history, and ``extra`` (timings, device)."""
  doc = {"config": config.to_json(), "history": history, **extra}
  for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
    doc[k] = [r[k] for r in history]
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
  os.replace(tmp, path)
