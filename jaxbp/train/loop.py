"""Training on the manual rules: optimisers by name through optax, a jitted step, evaluation, ``fit``.

The loop is note 001's and note 004's: forward, loss, backward (every op's hand-written rule), optax update,
over shuffled mini-batches. The step is one jitted function ``step(state, batch) -> (state, metrics)`` whose
state is a :class:`TrainState`; it runs unchanged on one device or many (data parallel: batch sharded over a
``Mesh``, state replicated; see :func:`make_mesh`). Training knows no model: the model is a registered
family's config (``TrainConfig.model``), reached through ``jaxbp.models``' registry.
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import functools
import json
import os
import time
from typing import Any, NamedTuple
import warnings

import jax
import numpy as np

from jaxbp import models
from jaxbp.train import checkpoint as ckpt
from jaxbp.train.config import ConfigError
from jaxbp.train.config import TrainConfig
from jaxbp.train.config import check_config
from jaxbp.train.optim import make_optimizer
from jaxbp.train.resume import CHECKPOINT
from jaxbp.train.resume import Resumed
from jaxbp.train.resume import check_continues
from jaxbp.train.resume import data_identity
from jaxbp.train.resume import read as read_checkpoint
from jaxbp.train.sharding import check_mesh
from jaxbp.train.sharding import place
from jaxbp.train.sharding import shardings
from jaxbp.train.sharding import state_shardings
from jaxbp.train.step import TrainState
from jaxbp.train.step import data_spec
from jaxbp.train.step import init_state
from jaxbp.train.step import make_eval_fn
from jaxbp.train.step import make_loss_fn
from jaxbp.train.step import make_train_step
from jaxbp.train.step import split_arrays

__all__ = ["FIT_FILES", "FitObserver", "FitResult", "IN_FLIGHT", "NonFiniteError", "epoch_order", "fit", "run_steps",
           "write_metrics"]

FIT_FILES = (CHECKPOINT, "metrics.jsonl")  # what fit writes in out_dir; a caller names its own (outputs)


class NonFiniteError(RuntimeError):
  """Training produced a NaN/inf loss, gradient or update; the parameters were not updated with it."""


class FitResult(NamedTuple):
  state: TrainState
  history: list        # one dict per epoch: epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds
  compile_seconds: float
  data: dict | None = None  # the data's identity as the checkpoint records it (name, sha256, source, classes)

  def _repr_html_(self) -> str:
    """What Jupyter shows: one row per epoch, the compile time (``jaxbp.insight.display``)."""
    from jaxbp.insight import display
    return display.fit_html(self)


class FitObserver:
  """What :func:`fit` reports while it runs, as the hooks of one object: subclass it and override those you need.

  Every hook does nothing by default, except :meth:`on_warning`, which calls ``warnings.warn``. ``fit`` calls
  them in this order: ``on_warning`` (zero or more times, while checking its arguments), ``on_checked`` once,
  then for each epoch ``on_epoch_start``, ``on_step`` after each step, ``on_epoch_end``. An epoch that stops
  (a :class:`NonFiniteError`, an exception raised by a hook, Ctrl-C) gets no ``on_epoch_end``; with
  ``out_dir``, the checkpoint then holds the epoch of the last ``on_epoch_end`` (or, resuming, ``on_checked``'s
  ``start_epoch``). ``jaxbp train``'s progress bars, TensorBoard events and Ctrl-C message are one observer.
  """

  def on_warning(self, message: str) -> None:
    """A setting that trains but not all of the data or steps given: a dropped partial batch, micro-batches
    accumulated but never applied."""
    warnings.warn(message, UserWarning, stacklevel=5)  # points at fit's caller

  def on_checked(self, start_epoch: int, steps_per_epoch: int) -> None:
    """Every argument is accepted; nothing is compiled yet. ``start_epoch``: the epochs already done (those
    of the checkpoint resumed, else 0); ``steps_per_epoch``: micro-batches per epoch."""

  def on_epoch_start(self, epoch: int, steps: int) -> None:
    """Epoch ``epoch`` (1-based) of ``steps`` micro-batches begins."""

  def on_step(self, epoch: int, step: int) -> None:
    """Step ``step`` (1-based within the epoch) is dispatched; it may still be running (see ``run_steps``)."""

  def on_epoch_end(self, record: dict, state: TrainState) -> None:
    """Epoch ``record["epoch"]`` is done: its history record (as in ``FitResult.history``) and the state after
    it. With ``out_dir``, its checkpoint and its line of ``metrics.jsonl`` are written already."""


def epoch_order(seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Example indices of one epoch, ``[num_batches, batch_size]``: a permutation drawn from NumPy's
  counter-based ``default_rng([seed, epoch])``, so any epoch's order is known without replaying the earlier
  ones (what ``--resume`` needs); the last ``num_examples % batch_size`` examples of it are dropped."""
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  num_batches = num_examples // batch_size
  return order[:num_batches * batch_size].reshape(num_batches, batch_size)


class _Plan(NamedTuple):
  """What ``fit`` decided before compiling anything."""
  spec: models.DataSpec
  steps: int                   # micro-batches per epoch
  path: str | None             # the checkpoint file
  resumed: Resumed | None
  data_id: dict
  start: Resumed | None        # the checkpoint whose parameters a new run starts from (init_from)


def _check_sizes(config: TrainConfig, n: int, mesh: Any, warn: Callable[[str], None]) -> int:
  """Micro-batches per epoch; ValueError where the settings cannot train, a warning for what is dropped."""
  batch = config.batch_size
  if batch > n:
    raise ConfigError("batch_size", f"{batch} is larger than the {n} training examples")
  if mesh is not None and batch % mesh.shape["data"]:
    raise ConfigError("batch_size", f"{batch} must be divisible by the number of devices"
                      f" ({mesh.shape['data']}{' along the data axis' if mesh.size != mesh.shape['data'] else ''})")
  steps = n // batch
  total = steps * config.epochs
  if config.accumulate > total:
    raise ConfigError("accumulate", f"{config.accumulate} is more than the {total} micro-batches of the"
                      f" whole run ({steps} per epoch × {config.epochs} epochs): the parameters would never be"
                      " updated")
  if n % batch:
    warn(f"each epoch drops the last {n % batch} of the {n} training examples (a partial batch; a different"
         f" {n % batch} each epoch, as the order is reshuffled, so none is left out for good)")
  if total % config.accumulate:
    warn(f"the last {total % config.accumulate} of the run's {total} micro-batches are accumulated but never"
         f" applied (accumulate {config.accumulate})")
  return steps


def _prepare_out_dir(out_dir: str, resume: bool, overwrite: bool, outputs: Sequence[str]) -> None:
  """Refuses to write a run over another unless ``overwrite``, which deletes that run's files first: fit's
  own (``FIT_FILES``) and the caller's ``outputs``."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ConfigError("out_dir", f"{out_dir} is a file, not a directory")
  if resume:
    return
  found = sorted(f for f in {*FIT_FILES, *outputs} if os.path.exists(os.path.join(out_dir, f)))
  if found and not overwrite:
    raise ConfigError("out_dir", f"{out_dir} already holds a run ({', '.join(found)}); resume it, overwrite it,"
                      " or choose another directory")
  if jax.process_index() == 0:
    for f in found:
      os.remove(os.path.join(out_dir, f))
    os.makedirs(out_dir, exist_ok=True)


def _plan(config: TrainConfig, data: Any, out_dir: str | None, resume: bool | Resumed, overwrite: bool,
          outputs: Sequence[str], source: dict | None, mesh: Any, observer: FitObserver,
          init_from: str | Resumed | None) -> _Plan:
  """Every check of ``fit``'s arguments, once, before anything compiles; what it decided."""
  check_config(config)
  if resume and overwrite:
    raise ConfigError("overwrite", "replaces the run in out_dir, resume continues it: give one of them")
  if resume and init_from is not None:
    raise ConfigError("init_from", "starts a new run from a checkpoint's parameters, resume continues the run in"
                      " out_dir: give one of them")
  start = read_checkpoint(init_from) if isinstance(init_from, str) else init_from
  if resume and out_dir is None:
    raise ConfigError("resume", "needs out_dir, the directory of the run to continue")
  if getattr(data, "segments_train", None) is not None and not config.family.segments:
    takes = [n for n in models.names() if models.get(n).segments]
    raise ConfigError("model", f"{config.family.name} does not take segment ids, which the packed rows of"
                      f" {data.name} need; use {' or '.join(takes) or 'a family registered with segments=True'}")
  steps = _check_sizes(config, data.x_train.shape[0], mesh, observer.on_warning)
  check_mesh(config, data_spec(data), mesh)
  path = os.path.join(out_dir, CHECKPOINT) if out_dir else None
  resumed = resume if isinstance(resume, Resumed) else (read_checkpoint(path) if resume and path else None)
  data_id = data_identity(data, resumed.data["source"] if resumed is not None and source is None else source)
  if resumed is not None:
    check_continues(config, resumed, data_id)
  if out_dir:
    _prepare_out_dir(out_dir, resumed is not None, overwrite, outputs)
  return _Plan(data_spec(data), steps, path, resumed, data_id, start)


class _Compiled(NamedTuple):
  init: Any          # compiled () -> TrainState, or None when resuming
  step: Any
  evaluate: Any
  abstract: Any      # the TrainState's shapes and dtypes
  seconds: float


def _compile(config: TrainConfig, spec: models.DataSpec, data: Any, steps: int, mesh: Any, init: bool) -> _Compiled:
  """Lowers the initialiser, the step and the evaluation, then compiles them concurrently (XLA releases
  the GIL, so on two cores this halves the wait); the initialiser at XLA's backend optimisation level 0,
  since it runs once."""
  t0 = time.perf_counter()
  optimizer = make_optimizer(config, steps * config.epochs)
  init_fn = jax.jit(lambda: init_state(config, spec, optimizer))
  abstract = jax.eval_shape(init_fn)
  replicated, sharded = shardings(mesh) if mesh is not None else (None, None)
  if mesh is not None:
    held = state_shardings(mesh, abstract, config.family)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, held)
  batch = tuple(jax.ShapeDtypeStruct((config.batch_size, *a.shape[1:]), a.dtype, sharding=sharded)
                for a in split_arrays(data, "train"))
  test = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated) for a in split_arrays(data, "test"))
  step = make_train_step(make_loss_fn(config, spec), optimizer, mesh=mesh, grad_flow=config.grad_flow,
                         state_sharding=held if mesh is not None else None)
  jobs: list[tuple[Any, dict]] = [(step.lower(abstract, batch), {}),
          (make_eval_fn(config, spec).lower(abstract.params, abstract.model_state, *test), {})]
  if init:
    jobs.append((init_fn.lower(), {"xla_backend_optimization_level": 0}))
  with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    compiled = list(pool.map(lambda job: job[0].compile(compiler_options=job[1]), jobs))
  return _Compiled(compiled[2] if init else None, compiled[0], compiled[1], abstract, time.perf_counter() - t0)


def _summarise(metrics: list, first_step: int, epoch: int, path: str | None, last_saved: int) -> dict:
  """Epoch means of the step metrics; NonFiniteError at the first non-finite step."""
  m = jax.device_get(metrics)
  finite = np.array([s["finite"] for s in m])
  if not finite.all():
    bad = first_step + int(np.argmin(finite)) + 1
    where = (f"the last checkpoint, {path} (after epoch {last_saved}), holds finite parameters" if last_saved
             else "no checkpoint was written before it")
    raise NonFiniteError(f"non-finite loss, gradient or update at step {bad} (epoch {epoch}); the parameters"
                         f" were not updated with it; {where}. Try a lower lr, or clip=1.0")
  means = {k: float(np.mean([s[k] for s in m])) for k in ("loss", "accuracy", "token_accuracy") if k in m[0]}
  if "layer_grad_norms" in m[0]:
    means["layer_grad_norms"] = np.mean([s["layer_grad_norms"] for s in m], axis=0).tolist()
  return means


# Steps that fit lets run ahead of the host. Without a bound, XLA:CPU deadlocks on multi-device meshes of host
# devices (jaxlib 0.10.2; docs/training.md, "Steps in flight"): each device admits 32 programs in flight (a
# semaphore), acquired by the launching task on the client's thread pool of max(cores, devices) threads.
# When the host has dispatched 32 steps ahead (a step slower than its dispatch, e.g. the transformer's), the
# launch of the next one blocks a pool thread on that semaphore; the oldest step then has too few threads
# left to run all its devices' parts at once, and the part that runs waits in the all-reduce for one that
# never starts: "waiting for `all reduce RendezvousKey...` ... may be stuck", then SIGABRT. No model needed
# (the whole script is in docs/training.md): on a 2-core host with
# XLA_FLAGS=--xla_force_host_platform_device_count=2, w [256, 256] replicated and x [4096, 256] split over
# a ("data",) mesh, a jitted step(w, x) of 8 times `x = tanh(x @ w)` returning (w + 1e-3 * mean(x, 0)[:, None],
# sum(x)), called 200 times as `w, loss = step(w, x)` without waiting, hangs after 33 to 44 steps; it
# finishes when it blocks on the step 8 back each time, or with NPROC=4 set before JAX starts.
IN_FLIGHT = 8


def run_steps(step: Callable, state: Any, batches: Any,
              on_step: Callable[[int], Any] | None = None) -> tuple[Any, list]:
  """``state, metrics = step(state, batch)`` for each batch, dispatched asynchronously but never more than
  ``IN_FLIGHT`` steps ahead of the oldest unfinished one (it blocks on that step's metrics first), which
  XLA:CPU needs on several host devices (see ``IN_FLIGHT``); returns the last state and every step's
  metrics. ``on_step(i)`` after the ``i``-th step's dispatch (1-based) when given."""
  metrics: list = []
  for batch in batches:
    if len(metrics) >= IN_FLIGHT:
      jax.block_until_ready(metrics[-IN_FLIGHT])
    state, m = step(state, batch)
    metrics.append(m)
    if on_step is not None:
      on_step(len(metrics))
  return state, metrics


def _record(epoch: int, train: dict, test: dict, seconds: float) -> dict:
  record = {"epoch": epoch, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
            "test_loss": float(test["loss"]), "test_accuracy": float(test["accuracy"])}
  if "token_accuracy" in train:
    record.update(train_token_accuracy=train["token_accuracy"], test_token_accuracy=float(test["token_accuracy"]))
  record["seconds"] = seconds
  if "layer_grad_norms" in train:
    record["layer_grad_norms"] = train["layer_grad_norms"]
  return record


def _write_lines(path: str, records: list, mode: str) -> None:
  with open(path, mode, encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def _initial(plan: _Plan, compiled: _Compiled, held: Any) -> tuple[TrainState, list, dict]:
  """The state a run starts its first epoch with, its history so far, and the ``init_from`` record its
  checkpoints carry: the resumed checkpoint's, or a new state (with ``init_from``'s parameters)."""
  if plan.resumed is not None:
    r = plan.resumed
    started_from = {k: v for k, v in r.doc["meta"].items() if k == "init_from"}  # kept by every save
    return place(ckpt.restore(r.path, r.doc, r.arrays, compiled.abstract), held), list(r.history), started_from
  state, s = compiled.init(), plan.start
  if s is None:
    return place(state, held), [], {}
  state = ckpt.restore_fields(s.path, s.doc, s.arrays, state, ("params", "model_state"))
  return place(state, held), [], {"init_from": {"path": os.path.abspath(s.path), "epoch": s.epoch,
                                                "data": s.data.get("name")}}


def fit(config: TrainConfig, data: Any, *, out_dir: str | None = None, resume: bool | Resumed = False,
        overwrite: bool = False, outputs: Sequence[str] = (), source: dict | None = None,
        mesh: jax.sharding.Mesh | None = None, observer: FitObserver | None = None,
        init_from: str | Resumed | None = None) -> FitResult:
  """Trains ``config.model`` on ``data`` as ``config`` says; everything is checked before anything compiles.

  Args:
    config: a :class:`TrainConfig`.
    data: a data set as the model registry describes (a :class:`jaxbp.train.data.Dataset`, or a sequence task's);
      the test set is evaluated after every epoch.
    out_dir: if given, ``out_dir/checkpoint.npz`` is written (atomically) and a line appended to
      ``out_dir/metrics.jsonl`` after every epoch. A directory holding another run is refused.
    resume: continue from ``out_dir/checkpoint.npz`` (``True``), or from a checkpoint already read with
      :func:`read_checkpoint`. Same config and data (checked by content hash); ``epochs`` may change with
      a constant schedule (``continue_config``). The result equals an uninterrupted run's.
    overwrite: replace the run in ``out_dir`` (its files are deleted first).
    outputs: names of the caller's own files in ``out_dir`` (``jaxbp train``'s plots and summary): a
      directory holding one of them holds a run, and ``overwrite`` deletes them with ``fit``'s own.
    source: where the data came from (e.g. ``{"path": ..., "label_column": ...}``), saved with its hash.
    mesh: a ``Mesh`` from :func:`make_mesh` (``("data",)``, or ``("data", "model")`` for
      ``config.model_parallel`` > 1), or ``None`` for the default device.
    observer: a :class:`FitObserver` told of warnings, the end of the checks, each epoch's start and end
      and each step; ``None``: warnings go to ``warnings.warn``, nothing else is reported.
    init_from: a checkpoint (its path, or one read with :func:`read_checkpoint`) whose parameters and model
      state the run starts from instead of initialising them; the optimiser state, schedule, step count and
      data are this run's (fine-tuning; context extension: a model trained on short sequences goes on at
      longer ones). Its parameters must have this model's shapes and dtypes. Not with ``resume``.

  Returns:
    A :class:`FitResult`.

  Raises:
    ConfigError: an argument or a config field that cannot be used, named by ``field`` (``"lr"``,
      ``"model.dropout"``, ``"out_dir"``, ...); the only check of them: callers need not check first.
    CheckpointError, ValueError: a checkpoint that cannot be read or continued with this config and data.
    NonFiniteError: a NaN/inf loss, gradient or update.
  """
  observer = FitObserver() if observer is None else observer
  plan = _plan(config, data, out_dir, resume, overwrite, outputs, source, mesh, observer, init_from)
  observer.on_checked(plan.resumed.epoch if plan.resumed is not None else 0, plan.steps)
  compiled = _compile(config, plan.spec, data, plan.steps, mesh, plan.resumed is None)
  replicated, sharded = shardings(mesh) if mesh is not None else (None, None)
  held = state_shardings(mesh, compiled.abstract, config.family) if mesh is not None else None
  state, history, started_from = _initial(plan, compiled, held)
  start = len(history)
  lead = jax.process_index() == 0
  lines = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
  if lines and lead:
    _write_lines(lines, history, "w")
  test, train = place(split_arrays(data, "test"), replicated), split_arrays(data, "train")
  for epoch in range(start, config.epochs):
    t0 = time.perf_counter()
    observer.on_epoch_start(epoch + 1, plan.steps)
    batches = (place(tuple(a[idx] for a in train), sharded)
               for idx in epoch_order(config.seed, epoch, data.x_train.shape[0], config.batch_size))
    state, metrics = run_steps(compiled.step, state, batches, functools.partial(observer.on_step, epoch + 1))
    means = _summarise(metrics, epoch * plan.steps, epoch + 1, plan.path, epoch if plan.path else 0)
    record = _record(epoch + 1, means, jax.device_get(compiled.evaluate(state.params, state.model_state, *test)),
                     time.perf_counter() - t0)
    history.append(record)
    if plan.path is not None and lead:
      ckpt.save(plan.path, state, {"config": config.to_json(), "epoch": epoch + 1, "history": history,
                                   "data": plan.data_id, **started_from})
      _write_lines(lines, [record], "a")  # type: ignore[arg-type]
    observer.on_epoch_end(record, state)
  return FitResult(state, history, compiled.seconds, plan.data_id)


def write_metrics(path: str, config: TrainConfig, history: list, **extra: Any) -> None:
  """Writes ``metrics.json``: the config, the per-epoch history, and ``extra`` (data, timings, device)."""
  doc = {"config": config.to_json(), "history": history, **extra}
  for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
    doc[k] = [r[k] for r in history]
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2)
  os.replace(tmp, path)
