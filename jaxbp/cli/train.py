"""Train a model on the manual backprop rules: an MLP on scikit-learn's bundled digits by default.

Every gradient flows through jaxbp's hand-written custom_vjp rules (or, with --autodiff, through
jax.grad of the plain-jnp references, for comparison). After each epoch OUT receives checkpoint.npz
(no pickle; written atomically) and one line of metrics.jsonl; at the end metrics.json and curves.png.
--model chooses a registered model family; its fields are the model flags (each says which models use it).

examples:
  jaxbp train                                   # MLP 64-256-256-10, Adam, digits; >= 97% test accuracy
  jaxbp train --optimizer adamw --schedule cosine --epochs 20 --batch-norm --dropout 0.1
  jaxbp train --data my.csv --label-column target --hidden 128 --out runs/mine
  jaxbp train --out runs/mine --resume          # continue after an interruption
"""

import argparse
import importlib.util
import os
import sys
import threading
import time
from typing import Any

from jaxbp import models
from jaxbp.cli import _flags
from jaxbp.cli import _source
from jaxbp.cli._plots import TimeGradFlow
from jaxbp.cli._plots import curves_title
from jaxbp.cli._plots import import_matplotlib
from jaxbp.cli._plots import plot_curves
from jaxbp.cli._plots import plot_grad_flow
from jaxbp.cli._plots import plot_time_grad_flow
from jaxbp.train import FitObserver
from jaxbp.train.config import DTYPES
from jaxbp.train.config import TrainConfig
from jaxbp.train.optim import OPTIMIZERS
from jaxbp.train.optim import SCHEDULES

HELP = "train a model (an MLP on the digits, or your data) with the manual rules; metrics, plot, checkpoint"

_TRAIN_HELP = {
    "model": "the model family", "loss": "softmax cross-entropy or multiclass hinge (SVM), or the model's own",
    "optimizer": "update rule", "lr": "peak learning rate",
    "schedule": "constant; cosine decay to 0; warmup (linear over first 10%, then constant); warmup-cosine",
    "epochs": "passes over the training set",
    "batch_size": "examples per step; each epoch's last partial batch is dropped (with a warning)",
    "weight_decay": "adamw: decoupled decay (default 1e-4); others: adds WD·w to the gradient (coupled L2)",
    "l2": "adds ops.l2_penalty λ/2·Σ‖W‖² to the loss", "clip": "clip gradients to this global norm (0: off)",
    "accumulate": "accumulate gradients over K micro-batches per update (optax.MultiSteps)",
    "seed": "seed of initialisation, dropout and shuffling, 0 to 2**32-1 (the split is fixed)",
    "autodiff": "use jax.grad of the reference ops instead of the manual rules",
    "grad_flow": "record per-layer weight-gradient norms each epoch (metrics.json) and plot grad_flow.png",
    "model_parallel": "split the model over N of the --devices: a (devices/N, N) mesh ('data', 'model')",
    "dtype": "what the model computes in: bfloat16 keeps the parameters float32, activations bfloat16",
}
_METAVARS = {"weight_decay": "WD", "l2": "LAMBDA", "clip": "NORM", "accumulate": "K", "model_parallel": "N"}
_MODEL_FIELDS: list[str] = []
# What this command writes in --out besides fit's checkpoint.npz and metrics.jsonl: fit refuses a directory
# holding any of them and --overwrite deletes them with its own (a stale grad_flow_time.png stayed, once).
OUTPUT_FILES = ("metrics.json", "curves.png", "grad_flow.png", "grad_flow_time.png")
# The flag of each field of fit's errors (ConfigError.field) that is not its own name with dashes.
_FIELD_FLAGS = {"out_dir": "--out", "num_devices": "--devices"}


def configure(parser: argparse.ArgumentParser) -> None:
  """Adds the flags of ``jaxbp train`` to ``parser``: TrainConfig's and every model family's fields."""
  d, hints = TrainConfig()._asdict(), models.field_types(TrainConfig)
  m, o = parser.add_argument_group("model"), parser.add_argument_group("optimisation (optax)")
  io = parser.add_argument_group("data, output, devices")
  losses = list(dict.fromkeys(loss for n in models.names() for loss in models.get(n).losses))
  choices = {"model": models.names(), "loss": losses, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPES}
  for field in TrainConfig._fields:
    default = TrainConfig().family.name if field == "model" else _flags.show(d[field])
    text = f"{_TRAIN_HELP[field]} (default {default})"
    group = m if field in ("model", "loss") else io if field in ("grad_flow", "model_parallel") else o
    _flags.add_field(group, field, str if field == "model" else hints[field], text, choices=choices.get(field),
                     metavar=_METAVARS.get(field))
  reserved = set(TrainConfig._fields) | {"data", "label_column", "task", "task_length", "out", "resume", "overwrite",
                                         "devices", "init_from",
                                         "coordinator_address", "num_processes", "process_id", "no_plot",
                                         "log_loss", "tensorboard"}
  _MODEL_FIELDS[:] = _flags.add_model_flags(m, reserved)
  io.add_argument("--data", metavar="PATH", help=".npz (arrays x, y) or .csv with a header; default: digits")
  io.add_argument("--label-column", default=argparse.SUPPRESS, metavar="NAME",
                  help="the label column of a .csv --data (default label)")
  tasks = _source.tasks_module()
  if tasks is not None:
    io.add_argument("--task", choices=tuple(tasks.TASKS), help="a generated sequence task instead of --data")
    io.add_argument("--task-length", type=int, metavar="N", help="the task's length: digits per operand (default"
                    " 8), or the positions T of --task lookup (default 128)")
  io.add_argument("--out", metavar="DIR", help="output directory (default runs/<timestamp>)")
  start = io.add_mutually_exclusive_group()  # continue OUT's run, or start a new one from another's parameters
  start.add_argument("--resume", action="store_true", help="continue OUT's run with its saved config and data")
  start.add_argument("--init-from", metavar="CKPT", help="start from the parameters of another run (its --out"
                  " directory or checkpoint.npz): a new run, with this run's data, optimiser and schedule; e.g."
                  " go on at a longer --task-length")
  io.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (its files are deleted)")
  io.add_argument("--devices", type=int, default=1, metavar="N", help="data parallel over N devices (default 1)")
  io.add_argument("--coordinator-address", metavar="HOST:PORT", help="multi-host: jax.distributed.initialize")
  io.add_argument("--num-processes", type=int, metavar="P", help="multi-host: number of processes")
  io.add_argument("--process-id", type=int, metavar="I", help="multi-host: this process's id")
  io.add_argument("--no-plot", action="store_true", help="skip curves.png (and grad_flow.png)")
  io.add_argument("--log-loss", action="store_true", help="curves.png: the loss on a log scale (to see it fall"
                  " over decades once the fit is good)")
  io.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files to DIR each epoch: loss,"
                  " accuracy, learning rate, per-layer gradient norms (turns on --grad-flow) and histograms;"
                  ' needs pip install "jaxbp[tensorboard]"')


def _missing_extras(args: argparse.Namespace) -> list[str]:
  needed = ["tqdm"] + ([] if args.no_plot else ["matplotlib"])
  needed += [] if args.data or getattr(args, "task", None) or args.resume else ["sklearn"]
  return [m for m in needed if importlib.util.find_spec(m) is None]


def _typed(args: argparse.Namespace) -> dict[str, Any]:
  """The TrainConfig fields the user typed (flags have default SUPPRESS: absent unless typed)."""
  return {f: getattr(args, f) for f in TrainConfig._fields if hasattr(args, f)}


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
  """The ``TrainConfig`` the flags describe: the model family's defaults, then every typed flag."""
  typed = _typed(args)
  family = models.get(typed.pop("model", TrainConfig().family.name))
  typed = {**family.train_defaults, **typed}  # the family's training defaults, where no flag was typed
  typed.setdefault("loss", family.losses[0])
  return TrainConfig(model=_flags.model_from_args(args, family.name, _MODEL_FIELDS), **typed)


def _resume(args: argparse.Namespace, out: str, say: Any) -> tuple[Any, TrainConfig, dict]:
  """The checkpoint (read once), the config continuing it and the data source; warns of ignored flags.
  ``fit`` checks that the config continues the run; "resuming from epoch N" is said once it has
  (``_on_checked``)."""
  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  resumed = train_lib.read_checkpoint(os.path.join(out, train_lib.CHECKPOINT))
  typed = _typed(args)
  ignored = [_flags.flag(f) for f in [*typed, *(f for f in _MODEL_FIELDS if hasattr(args, f))] if f != "epochs"]
  if ignored:
    say(f"resuming with the checkpoint's config; ignoring {', '.join(ignored)}")
  config = train_lib.continue_config(resumed, typed.get("epochs"))  # a bad --epochs: said before anything loads
  source = _source.source(args, config.family) if args.data or getattr(args, "task", None) else resumed.data["source"]
  return resumed, config, source


def _initialize_distributed(args: argparse.Namespace) -> None:
  flags = (args.coordinator_address, args.num_processes, args.process_id)
  if all(f is None for f in flags):
    return
  if any(f is None for f in flags):
    raise ValueError("multi-host training needs all of --coordinator-address, --num-processes, --process-id")
  import jax  # pylint: disable=import-outside-toplevel
  jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                             process_id=args.process_id)


def _describe(what: Any) -> str:
  """One line for a data spec or a model config."""
  if isinstance(what, models.DataSpec):
    if what.kind == "features":
      return f"{what.input_shape[0]} features, {what.num_classes} classes"
    return f"sequences of {what.input_shape[0]} tokens ({what.vocab_size} ids in, {what.num_classes} out)"
  fields = ", ".join(f"{k}={_flags.show(v)}" for k, v in what._asdict().items())
  return f"{models.family_of(what).name}({fields})"


def _say(message: str) -> None:
  print(f"jaxbp train: {message}", file=sys.stderr)


class _Reporter(FitObserver):
  """What ``jaxbp train`` shows and records while ``fit`` runs: the banner once fit has accepted everything,
  its warnings, a tqdm bar per epoch, the epoch hooks (TensorBoard, per-time-step norms); on a process other
  than the lead, none of these. ``saved`` is the epoch the checkpoint in --out holds, as fit reports it: what
  a Ctrl-C says. Leaving it (``with``) closes the bar of an epoch an exception cut short, before anything
  else is said (tqdm would redraw it later), and the TensorBoard event file."""

  def __init__(self, lead: bool, banner: str, resume: Any, epochs: int, hooks: dict[str, Any]):
    self.lead, self.banner, self.resume, self.epochs, self.hooks = lead, banner, resume, epochs, hooks
    self.saved = resume.epoch if resume else 0
    self.bar: Any = None

  def on_warning(self, message: str) -> None:
    if self.lead:
      _say(f"warning: {message}")

  def on_checked(self, start_epoch: int, steps_per_epoch: int) -> None:
    if self.lead:
      print(self.banner, file=sys.stderr)
      if self.resume:
        _say(f"resuming from epoch {start_epoch} of {self.epochs} ({self.resume.path})")

  def on_epoch_start(self, epoch: int, steps: int) -> None:
    if self.lead:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step", leave=True, file=sys.stderr,
                      dynamic_ncols=True)

  def on_step(self, epoch: int, step: int) -> None:
    if self.bar is not None:
      self.bar.update(1)

  def on_epoch_end(self, record: dict, state: Any) -> None:
    self.saved = record["epoch"]
    if self.bar is not None:
      self.bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{record['train_accuracy']:.3f}",
                           test_acc=f"{record['test_accuracy']:.3f}")
      self._close_bar()
    for hook in self.hooks.values():
      hook(record, state)

  def _close_bar(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None

  def __enter__(self) -> "_Reporter":
    return self

  def __exit__(self, *exc_info: object) -> None:
    self._close_bar()
    if "tensorboard" in self.hooks:
      self.hooks["tensorboard"].close()


def _settings(args: argparse.Namespace) -> tuple[str, Any, TrainConfig, dict]:
  """The run's directory, checkpoint to resume (or False), config and data source, from the flags."""
  if args.resume and not args.out:
    raise ValueError("--resume needs --out DIR, the directory of the run to continue")
  out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
  if args.tensorboard:
    from jaxbp.cli.tensorboard import check_logdir  # pylint: disable=import-outside-toplevel
    check_logdir(args.tensorboard, args.resume)
  if args.resume:
    return (out, *_resume(args, out, _say))
  config = _config_from_args(args)
  source = _source.source(args, config.family)
  if args.tensorboard and not hasattr(args, "grad_flow"):  # the per-layer norms TensorBoard draws
    config = config._replace(grad_flow=True)
  return out, False, config, source


def _banner(args: argparse.Namespace, config: TrainConfig, data: Any, source: dict) -> str:
  import jax  # pylint: disable=import-outside-toplevel

  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  rules = "jax.grad of jaxbp.ops.reference" if config.autodiff else "manual rules (jaxbp.ops)"
  chosen = not args.resume and "task" in source and not getattr(args, "task", None)
  default = f" (the default task of --model {config.family.name}; --task to choose)" if chosen else ""
  return (f"{data.name}{default}: {len(data.y_train)} train / {len(data.y_test)} test,"
          f" {_describe(train_lib.data_spec(data))};"
          f" {_describe(config.model)} on {rules}, {config.optimizer} lr {config.lr}; {jax.device_count()} device(s)"
          f" [{jax.default_backend()}]")


def _train(args: argparse.Namespace, started: float) -> int:
  """The body of ``jaxbp train`` once the extras are known to be there; checks everything, then trains."""
  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  out, resume, config, source = _settings(args)
  held, reporter = resume.epoch if resume else 0, None  # what the checkpoint holds until the reporter knows
  try:
    _initialize_distributed(args)
    import jax  # pylint: disable=import-outside-toplevel
    parallel = config.model_parallel
    mesh = train_lib.make_mesh(args.devices, parallel) if args.devices != 1 or parallel != 1 else None
    data = _source.load(source, config.seed)
    start = _source.init_from(args.init_from) if args.init_from else None
    lead = jax.process_index() == 0
    banner = _banner(args, config, data, source) + (_source.started_from(start) if start else "")
    reporter = _Reporter(lead, banner, resume, config.epochs, _epoch_hooks(args, config, data) if lead else {})
    with reporter:
      result = train_lib.fit(config, data, out_dir=out, resume=resume, overwrite=args.overwrite,
                             outputs=OUTPUT_FILES, source=source, mesh=mesh, observer=reporter, init_from=start)
  except KeyboardInterrupt:
    _say(_interrupted(out, held if reporter is None else reporter.saved))
    return 130
  if lead:
    _finish(args, out, config, result, data, mesh, started, hooks=reporter.hooks)
  return 0


def _epoch_hooks(args: argparse.Namespace, config: TrainConfig, data: Any) -> dict[str, Any]:
  """What runs after each epoch besides the bar: TensorBoard's writer, per-time-step norms."""
  hooks: dict[str, Any] = {}
  if args.tensorboard:
    from jaxbp.cli.tensorboard import TensorBoardWriter  # pylint: disable=import-outside-toplevel
    hooks["tensorboard"] = TensorBoardWriter(args.tensorboard, config, len(data.y_train) // config.batch_size)
    if not config.grad_flow:
      _say("--tensorboard: this run records no gradient norms (--no-grad-flow, or resumed from a run without"
           " --grad-flow); writing the scalars and weight histograms only")
  if config.grad_flow and not args.no_plot and models.family_of(config.model).time_grad_norms is not None:
    hooks["time_grad_flow"] = TimeGradFlow(config, data)
  return hooks


def _finish(args: argparse.Namespace, out: str, config: TrainConfig, result: Any, data: Any,
            mesh: Any, started: float, hooks: dict[str, Any]) -> None:
  """Plots and ``metrics.json`` (the summary; ``metrics.jsonl`` was written epoch by epoch)."""
  import jax  # pylint: disable=import-outside-toplevel

  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  plots = [] if args.no_plot else ["curves.png"] + (["grad_flow.png"] if config.grad_flow else [])
  if plots:
    plot_curves(os.path.join(out, "curves.png"), result.history, title=curves_title(config, data.name, result.history),
                dropout=getattr(config.model, "dropout", 0.0), log_loss=args.log_loss)
  if "grad_flow.png" in plots:
    plot_grad_flow(os.path.join(out, "grad_flow.png"), result.history,
                   list(jax.eval_shape(train_lib.layer_grad_norms, result.state.params)))
  time_flow = hooks.get("time_grad_flow")
  if time_flow is not None and time_flow.norms:
    plot_time_grad_flow(os.path.join(out, "grad_flow_time.png"), time_flow.norms, time_flow.label)
    plots.append("grad_flow_time.png")
  final, device = result.history[-1], jax.devices()[0]
  train_seconds = sum(r["seconds"] for r in result.history)
  train_lib.write_metrics(
      os.path.join(out, "metrics.json"), config, result.history, data=result.data,
      final_test_accuracy=final["test_accuracy"],
      compile_seconds=result.compile_seconds, train_seconds=train_seconds,
      wall_seconds=time.perf_counter() - started, device=f"{device.platform}: {device.device_kind}",
      num_devices=mesh.size if mesh is not None else 1, jax_version=jax.__version__)
  tokens = f" (whole sequence; {final['test_token_accuracy']:.2%} per answer token)" \
      if "test_token_accuracy" in final else ""
  print(f"test accuracy {final['test_accuracy']:.2%}{tokens} after {final['epoch']} epochs"
        f" (compile {result.compile_seconds:.2f} s, training {train_seconds:.2f} s);"
        f" wrote {out}/metrics.json, metrics.jsonl, checkpoint.npz" + "".join(f", {p}" for p in plots)
        + (f"; TensorBoard events in {args.tensorboard}" if args.tensorboard else ""))


def _interrupted(out: str | None, epoch: int) -> str:
  """What a Ctrl-C says, given the run's directory (None: not chosen yet) and the epoch its checkpoint holds."""
  if out is None or not epoch:
    return "interrupted before the first epoch finished; no checkpoint was written"
  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  path = os.path.join(out, train_lib.CHECKPOINT)
  return f"interrupted; {path} holds epoch {epoch}: continue with jaxbp train --out {out} --resume"


def run(args: argparse.Namespace) -> int:
  """Runs ``jaxbp train``; returns the exit status."""
  started = time.perf_counter()
  missing = _missing_extras(args)
  if missing:
    _say(f"missing {', '.join(missing)}; install the training extra: pip install \"jaxbp[train]\"")
    return 1
  if not args.no_plot:  # import it while XLA compiles (the compiler releases the GIL): ~1 s saved
    threading.Thread(target=import_matplotlib, daemon=True).start()
  from jaxbp.train import ConfigError  # pylint: disable=import-outside-toplevel
  from jaxbp.train import NonFiniteError  # pylint: disable=import-outside-toplevel
  from jaxbp.train.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from jaxbp.train.data import DataError  # pylint: disable=import-outside-toplevel
  from jaxbp.train.tasks import TaskError  # pylint: disable=import-outside-toplevel
  try:
    return _train(args, started)
  except ConfigError as e:  # fit's field, said as this command's flag
    _say(f"error: {_FIELD_FLAGS.get(e.field) or _flags.flag(e.field.removeprefix('model.'))} {e.reason}")
  except TaskError as e:  # make_task's argument, said as this command's flag where it has one
    flag = {"length": "--task-length"}.get(e.argument or "")
    _say(f"error: {flag} {e.reason}" if flag else f"error: {e}")
  except (DataError, CheckpointError, ValueError) as e:
    _say(f"error: {e}")
  except OSError as e:
    _say(f"error: {e.filename or ''}: {e.strerror or e}")
  except NonFiniteError as e:
    _say(f"stopped: {e}")
    return 3
  except KeyboardInterrupt:
    _say(_interrupted(None, 0))  # before --out was chosen
    return 130
  return 2
