"""The jitted pieces of training, generic over the registered models: the loss, the step, the evaluation
and the initial state (meshes and placement are ``sharding``'s).

Batches, heads and metrics are as the model registry's contract says (``jaxbp.models.register``): a
batch is ``(inputs, targets)``, ``(inputs, targets, mask)`` or ``(inputs, targets, mask, segment_ids)``;
the loss is the mean over scored positions; ``accuracy`` is per example, or exact match over each
sequence's (each packed example's) scored positions.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import models
from jaxbp import ops as _ops
from jaxbp.train.config import TrainConfig
from jaxbp.train.sharding import shardings


class TrainState(NamedTuple):
  """The whole state of a run; a pytree, checkpointed as is."""
  params: Any        # model parameters, e.g. {"layers": [{"w": [D_in, D_out], "b": [D_out]}, ...]}
  model_state: Any   # non-trained state such as batch-norm running statistics ({} if none)
  opt_state: Any     # optax state, structure decided by the optimiser chain
  step: jax.Array    # int32 [], micro-steps taken
  key: jax.Array     # typed PRNG key [], split once per step for dropout


def data_spec(data: Any) -> models.DataSpec:
  """The :class:`jaxbp.models.DataSpec` of a data set: its ``spec``, or feature vectors from its shapes."""
  spec = getattr(data, "spec", None)
  if spec is not None:
    return spec
  classes = data.num_classes if hasattr(data, "num_classes") else int(np.max(data.y_train)) + 1
  return models.DataSpec("features", tuple(int(n) for n in data.x_train.shape[1:]), int(classes))


def split_arrays(data: Any, split: str) -> tuple:
  """``(x, y)``, ``(x, y, mask)`` when the data set has masks, or ``(x, y, mask, segment_ids)`` when it
  also has segment ids (packed rows), of ``split`` (``"train"`` or ``"test"``)."""
  arrays = (getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
  extra = [getattr(data, f"{part}_{split}", None) for part in ("mask", "segments")]
  return (*arrays, *(a for a in extra if a is not None))


def _ops_of(config: TrainConfig, ops: Any) -> Any:
  if ops is not None:
    return ops
  return _ops.reference if config.autodiff else _ops


def _head(ops: Any, name: str, logits: jax.Array, targets: jax.Array, reduction: str) -> jax.Array:
  fn = ops.multiclass_hinge if name == "hinge" else ops.softmax_cross_entropy
  if reduction == "mean":
    return fn(logits, targets)
  losses = fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
  return losses.reshape(targets.shape)


def _examples_right(right: jax.Array, mask: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
  """Exact match: the share of sequences whose every scored position is right. With segment ids each run
  of equal ids in a row is one example (a packed row's); an example with no scored position does not count."""
  wrong = (~right & (mask > 0)).reshape(right.shape[0], -1)
  if segment_ids is None:
    return jnp.mean(~jnp.any(wrong, axis=1))
  n, t = wrong.shape
  ids = segment_ids.reshape(n, t)
  run = jnp.cumsum(jnp.concatenate([jnp.zeros((n, 1), bool), ids[:, 1:] != ids[:, :-1]], axis=1), axis=1)
  where = (jnp.arange(n)[:, None] * t + run).ravel()  # example k of row r is segment r·T + k
  wrong_per = jax.ops.segment_sum(wrong.ravel().astype(jnp.int32), where, num_segments=n * t)
  scored_per = jax.ops.segment_sum((mask.reshape(n, t) > 0).ravel().astype(jnp.int32), where, num_segments=n * t)
  return jnp.sum((scored_per > 0) & (wrong_per == 0)) / jnp.maximum(jnp.sum(scored_per > 0), 1)


def score(family: models.Family, head: str, params: Any, outputs: Any, targets: jax.Array,
          mask: jax.Array | None, ops: Any, model: Any = None,
          segment_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``(loss, metrics)`` of a batch's model outputs: the mean loss over scored positions and the accuracy
  (``model``: the family's config, for its own head; ``segment_ids``: packed rows' examples, for exact match)."""
  if family.head is not None:
    losses, predicted = family.head(head, params, outputs, targets, ops, model)
  else:  # the batch mean through the rule's own reduction when every example is scored
    losses = _head(ops, head, outputs, targets, "mean" if mask is None else "none")
    predicted = jnp.argmax(outputs, axis=-1)
  right = predicted == targets
  if mask is None:
    loss = jnp.mean(losses)
    return loss, {"loss": loss, "accuracy": jnp.mean(right)}
  scored = jnp.maximum(jnp.sum(mask), 1)
  loss = jnp.sum(losses * mask) / scored
  return loss, {"loss": loss, "accuracy": _examples_right(right, mask, segment_ids),
                "token_accuracy": jnp.sum(right * mask) / scored}


def _apply(family: models.Family, config: TrainConfig, spec: models.DataSpec, params: Any, model_state: Any,
           batch: tuple, ops: Any, **kwargs: Any) -> tuple[Any, Any]:
  """The family's apply on ``batch[0]``, with the batch's segment ids (its fourth array) when it has them."""
  if len(batch) > 3:
    kwargs["segment_ids"] = batch[3]
  return family.apply(params, model_state, batch[0], config.model, spec, ops=ops, **kwargs)


def compute_dtype(config: TrainConfig, tree: Any) -> Any:
  """``tree`` with its float leaves cast to ``config.dtype``: the model's side of the step's dtype boundary.

  Applied to the parameters and the inputs before the model and its head (generic over families: a
  family sees arrays of one dtype and knows nothing of it); the cast's VJP brings the gradients back
  in the parameters' own float32.
  """
  if config.dtype == "float32":
    return tree
  dtype = jnp.dtype(config.dtype)
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def _forward(config: TrainConfig, spec: models.DataSpec, family: models.Family, ops: Any) -> Any:
  """``forward(params, model_state, batch, train, key) -> (loss, metrics, model_state)``: the model and its
  head across the step's dtype boundary (``compute_dtype`` in, float32 out), shared by the loss and the
  evaluation."""
  def forward(params, model_state, batch, train, key):
    inner, x = compute_dtype(config, (params, batch[0]))
    outputs, new_state = _apply(family, config, spec, inner, model_state, (x, *batch[1:]), ops, train=train, key=key)
    loss, metrics = score(family, config.loss, inner, outputs, batch[1], batch[2] if len(batch) > 2 else None,
                          ops, config.model, batch[3] if len(batch) > 3 else None)
    if config.dtype != "float32":  # float32 outside: the state as it came in, the loss and metrics at least float32
      new_state = jax.tree.map(lambda n, o: n.astype(jnp.result_type(o)), new_state, model_state)
      loss, metrics = jax.tree.map(lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32)), (loss, metrics))
    return loss, metrics, new_state
  return forward


def make_loss_fn(config: TrainConfig, spec: models.DataSpec, *, ops: Any = None) -> Any:
  """``loss_fn(params, model_state, batch, key) -> (loss, (model_state, metrics))`` of the run's model.

  ``batch`` is ``(inputs, targets)``, ``(inputs, targets, mask)`` or ``(inputs, targets, mask,
  segment_ids)`` (packed rows, passed to the model's apply); the loss is the chosen head's mean
  over scored positions, plus ``ops.l2_penalty`` of the weights when ``config.l2 > 0``. ``ops`` defaults
  to ``jaxbp.ops``, or ``jaxbp.ops.reference`` when ``config.autodiff``.
  """
  family, ops = models.family_of(config.model), _ops_of(config, ops)
  forward = _forward(config, spec, family, ops)

  def loss_fn(params, model_state, batch, key):
    loss, metrics, model_state = forward(params, model_state, batch, True, key)
    if config.l2 > 0:
      weights = [w for w in jax.tree.leaves(params) if models.is_weight(w)]
      loss = loss + ops.l2_penalty(weights, config.l2)
    return loss, (model_state, metrics)
  return loss_fn


def make_eval_fn(config: TrainConfig, spec: models.DataSpec, *, ops: Any = None) -> Any:
  """Jitted ``evaluate(params, model_state, x, y[, mask[, segment_ids]]) -> {"loss", "accuracy", ...}`` in
  evaluation mode."""
  family, ops = models.family_of(config.model), _ops_of(config, ops)
  forward = _forward(config, spec, family, ops)
  return jax.jit(lambda params, model_state, *batch: forward(params, model_state, batch, False, None)[1])


def init_state(config: TrainConfig, spec: models.DataSpec, optimizer: optax.GradientTransformation) -> TrainState:
  """The initial :class:`TrainState` of a run (parameters from ``fold_in(key(seed), 0)``)."""
  root = jax.random.key(config.seed)
  params, model_state = models.family_of(config.model).init(jax.random.fold_in(root, 0), config.model, spec)
  return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32),
                    jax.random.fold_in(root, 1))


def _all_finite(*trees: Any) -> jax.Array:
  leaves = [x for x in jax.tree_util.tree_leaves(trees) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def default_donate() -> bool:
  """Donate the state's buffers on GPU/TPU, not on CPU: there it made steps slower (defensive copies and a
  >32 MiB temporary crossing glibc's mmap threshold, about 8,000 page faults a step; docs/performance.md)."""
  return jax.default_backend() != "cpu"


def layer_grad_norms(grads: Any) -> dict[str, jax.Array]:
  """‖∂L/∂W‖ (Frobenius) of every weight matrix in ``grads``, input layer first; works under ``jit``.

  Args:
    grads: a gradient pytree shaped like the parameters (e.g. ``{"layers": [{"w", "b"}, ...]}``).

  Returns:
    ``{path: norm}`` in pytree order for every weight (``jaxbp.models.is_weight``: two or more axes;
    biases and normalisation scales are left out), where ``path`` is the leaf's key path, e.g. ``['layers'][3]['w']``.
  """
  leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
  return {jax.tree_util.keystr(path): jnp.linalg.norm(leaf) for path, leaf in leaves if models.is_weight(leaf)}


def make_train_step(loss_fn: Any, optimizer: optax.GradientTransformation, *, donate: bool | None = None,
                    mesh: jax.sharding.Mesh | None = None, grad_flow: bool = False,
                    state_sharding: Any = None) -> Any:
  """The jitted training step ``step(state, batch) -> (state, metrics)``.

  One forward, one backward through the ops' rules (``jax.value_and_grad`` of ``loss_fn``), one optax
  update. When the loss, any gradient, or any updated parameter or state is not finite, the returned state
  equals the incoming one except for ``step`` and ``key`` (``metrics["finite"]`` is False): NaN and inf
  never reach the parameters, so every checkpoint holds finite numbers.

  Args:
    loss_fn: as returned by :func:`make_loss_fn`.
    optimizer: an optax ``GradientTransformation``.
    donate: donate the incoming state's buffers; ``None`` decides by backend (:func:`default_donate`).
    mesh: a ``Mesh`` with axis ``"data"`` for data parallelism (batch sharded over it), and optionally
      ``"model"`` (see ``state_sharding``).
    state_sharding: the state's shardings on ``mesh`` (:func:`state_shardings`); replicated if ``None``.
    grad_flow: also return ``metrics["layer_grad_norms"]``, :func:`layer_grad_norms` as a vector.
  """
  def step(state, batch):
    key, subkey = jax.random.split(state.key)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, subkey)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = _all_finite(loss, grads, params, model_state)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    state = TrainState(keep(params, state.params), keep(model_state, state.model_state),
                       keep(opt_state, state.opt_state), state.step + 1, key)
    metrics = dict(metrics, finite=finite)
    if grad_flow:
      metrics["layer_grad_norms"] = jnp.stack(list(layer_grad_norms(grads).values()))
    return state, metrics

  donate = default_donate() if donate is None else donate
  kwargs: dict[str, Any] = {"donate_argnums": (0,)} if donate else {}
  if mesh is not None:
    replicated, sharded = shardings(mesh)
    held = replicated if state_sharding is None else state_sharding
    kwargs.update(in_shardings=(held, sharded), out_shardings=(held, replicated))
  return jax.jit(step, **kwargs)
