"""Train a classifier on the manual backprop rules: an MLP on scikit-learn's bundled digits by default.

Every gradient flows through jaxbp's hand-written custom_vjp rules (or, with --autodiff, through
jax.grad of the plain-jnp references, for comparison). After each epoch OUT receives checkpoint.npz
(no pickle; written atomically); at the end metrics.json and curves.png.

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

from jaxbp.models.mlp import ACTIVATIONS
from jaxbp.models.mlp import INITS
from jaxbp.train import LOSSES
from jaxbp.train import MODELS
from jaxbp.train import OPTIMIZERS
from jaxbp.train import SCHEDULES
from jaxbp.train import TrainConfig

HELP = "train an MLP on the digits (or your data) with the manual rules; metrics, plot, checkpoint"

def _hidden(text):
  try:
    widths = tuple(int(w) for w in text.split(",") if w.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,256, got {text!r}") from None
  if any(w < 1 for w in widths):
    raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
  return widths


def configure(parser):
  """Adds the flags of ``jaxbp train`` to ``parser``."""
  d = TrainConfig()._asdict()
  m = parser.add_argument_group("model")
  m.add_argument("--model", choices=MODELS, default=d["model"], help="mlp, or linear (no hidden layer)")
  m.add_argument("--hidden", type=_hidden, default=d["hidden"], metavar="W1,W2,...",
                 help="hidden layer widths (default %(default)s)")
  m.add_argument("--activation", choices=ACTIVATIONS, default=d["activation"], help="hidden activation")
  m.add_argument("--init", choices=INITS, default=d["init"],
                 help="he: N(0, 2/fan_in); xavier/glorot: U(±√(6/(in+out)))")
  m.add_argument("--loss", choices=LOSSES, default=d["loss"], help="softmax cross-entropy or multiclass hinge (SVM)")
  m.add_argument("--batch-norm", action="store_true", help="batch-normalise hidden layers (running stats for eval)")
  m.add_argument("--dropout", type=float, default=d["dropout"], metavar="RATE", help="hidden dropout rate in [0, 1)")
  m.add_argument("--residual", action="store_true", help="residual connections where widths agree")
  o = parser.add_argument_group("optimisation (optax)")
  o.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help="update rule (default %(default)s)")
  o.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (default %(default)s)")
  o.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"],
                 help="constant; cosine decay to 0; warmup (linear over first 10%%, then constant); warmup-cosine")
  o.add_argument("--epochs", type=int, default=d["epochs"],
                 help="passes over the training set (default %(default)s)")
  o.add_argument("--batch-size", type=int, default=d["batch_size"],
                 help="examples per step; each epoch's last partial batch is dropped (default %(default)s)")
  o.add_argument("--weight-decay", type=float, default=d["weight_decay"], metavar="WD",
                 help="adamw: decoupled decay (default 1e-4); others: adds WD·w to the gradient (coupled L2)")
  o.add_argument("--l2", type=float, default=d["l2"], metavar="LAMBDA",
                 help="adds ops.l2_penalty λ/2·Σ‖W‖² to the loss")
  o.add_argument("--clip", type=float, default=d["clip"], metavar="NORM",
                 help="clip gradients to this global norm (0: off)")
  o.add_argument("--accumulate", type=int, default=d["accumulate"], metavar="K",
                 help="accumulate gradients over K micro-batches per update (optax.MultiSteps)")
  o.add_argument("--seed", type=int, default=d["seed"],
                 help="seed of initialisation, dropout and shuffling (the split is fixed)")
  o.add_argument("--autodiff", action="store_true",
                 help="use jax.grad of the reference ops instead of the manual rules")
  io = parser.add_argument_group("data, output, devices")
  io.add_argument("--data", metavar="PATH", help=".npz (arrays x, y) or .csv with a header; default: digits")
  io.add_argument("--label-column", default="label", metavar="NAME", help="CSV label column (default %(default)s)")
  io.add_argument("--out", metavar="DIR", help="output directory (default runs/<timestamp>)")
  io.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz with its saved config")
  io.add_argument("--devices", type=int, default=1, metavar="N", help="data parallel over N devices (default 1)")
  io.add_argument("--coordinator-address", metavar="HOST:PORT", help="multi-host: jax.distributed.initialize")
  io.add_argument("--num-processes", type=int, metavar="P", help="multi-host: number of processes")
  io.add_argument("--process-id", type=int, metavar="I", help="multi-host: this process's id")
  io.add_argument("--no-plot", action="store_true", help="skip curves.png (and grad_flow.png)")
  io.add_argument("--grad-flow", action="store_true",
                  help="record per-layer weight-gradient norms each epoch (metrics.json) and plot grad_flow.png")


def _missing_extras(args):
  needed = ["tqdm"] + ([] if args.no_plot else ["matplotlib"]) + ([] if args.data else ["sklearn"])
  return [m for m in needed if importlib.util.find_spec(m) is None]


def _config_from_args(args):
  """The ``TrainConfig`` the flags describe: every field has the flag of the same name."""
  return TrainConfig(**{field: getattr(args, field) for field in TrainConfig._fields})


def _resume_config(args, out):
  """The checkpoint's config; ``--epochs`` from the command line may extend it, other flags are ignored."""
  from jaxbp import checkpoint  # pylint: disable=import-outside-toplevel
  from jaxbp.train import CHECKPOINT  # pylint: disable=import-outside-toplevel
  doc, _ = checkpoint.read(os.path.join(out, CHECKPOINT))
  saved = TrainConfig.from_json(doc["meta"]["config"])
  given = _config_from_args(args)
  ignored = [f for f in saved._fields if f != "epochs" and getattr(given, f) != getattr(saved, f)
             and getattr(given, f) != getattr(TrainConfig(), f)]
  if ignored:
    print(f"jaxbp train: resuming with the checkpoint's config; ignoring --{', --'.join(ignored)}", file=sys.stderr)
  epochs = args.epochs if args.epochs != TrainConfig().epochs else saved.epochs
  return saved._replace(epochs=epochs)


def _progress(epochs):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return lambda epoch, steps: tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True,
                                   file=sys.stderr, dynamic_ncols=True)


def _import_matplotlib():
  pass  # pylint: disable=import-outside-toplevel,unused-import


def _plot(path, history):
  """Loss and accuracy per epoch, train and test, to ``path`` (matplotlib's Agg canvas, no pyplot)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  epochs = [r["epoch"] for r in history]
  fig = Figure(figsize=(9, 3.5), layout="constrained")
  for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
    for split in ("train", "test"):
      ax.plot(epochs, [r[f"{split}_{what}"] for r in history], marker="o", label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ax.legend()
  FigureCanvasAgg(fig).print_png(path)


def _plot_grad_flow(path, history):
  """Per-layer gradient norms at up to six epochs, first and last included (notes 001 and 004)."""
  from jaxbp.insight.gradflow import plot_grad_norms  # pylint: disable=import-outside-toplevel
  picks = sorted({round(i * (len(history) - 1) / 5) for i in range(6)})
  curves = {f"epoch {history[i]['epoch']}": history[i]["layer_grad_norms"] for i in picks}
  plot_grad_norms(curves, path, title="‖∂L/∂W‖ per layer, epoch means, during training")


def _initialize_distributed(args):
  flags = (args.coordinator_address, args.num_processes, args.process_id)
  if all(f is None for f in flags):
    return
  if any(f is None for f in flags):
    raise ValueError("multi-host training needs all of --coordinator-address, --num-processes, --process-id")
  import jax  # pylint: disable=import-outside-toplevel
  jax.distributed.initialize(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                             process_id=args.process_id)


def _train(args, started):
  """The body of ``jaxbp train`` once the extras are known to be there."""
  _initialize_distributed(args)
  import jax  # pylint: disable=import-outside-toplevel

  from jaxbp import data as data_lib  # pylint: disable=import-outside-toplevel
  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  if args.resume and not args.out:
    raise ValueError("--resume needs --out DIR, the directory of the run to continue")
  out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
  config = _resume_config(args, out) if args.resume else _config_from_args(args)
  train_lib.check_config(config)
  data = data_lib.load_dataset(args.data, args.label_column)
  mesh = train_lib.make_mesh(args.devices) if args.devices != 1 else None
  lead = jax.process_index() == 0
  if lead:
    os.makedirs(out, exist_ok=True)
    rules = "jax.grad of jaxbp.ops.reference" if config.autodiff else "manual rules (jaxbp.ops)"
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_test)} test, {data.num_features} features,"
          f" {data.num_classes} classes; {config.model} {config.hidden if config.model == 'mlp' else ''}"
          f" on {rules}, {config.optimizer} lr {config.lr}; {jax.device_count()} device(s)"
          f" [{jax.default_backend()}]", file=sys.stderr)
  result = train_lib.fit(config, data, out_dir=out, resume=args.resume, mesh=mesh,
                         progress=_progress(config.epochs) if lead else None)
  if not lead:
    return 0
  plots = [] if args.no_plot else ["curves.png"] + (["grad_flow.png"] if config.grad_flow else [])
  if not args.no_plot:
    _plot(os.path.join(out, "curves.png"), result.history)
  if "grad_flow.png" in plots:
    _plot_grad_flow(os.path.join(out, "grad_flow.png"), result.history)
  final = result.history[-1]
  device = jax.devices()[0]
  train_lib.write_metrics(
      os.path.join(out, "metrics.json"), config, result.history, data=args.data or "digits",
      final_test_accuracy=final["test_accuracy"], compile_seconds=result.compile_seconds,
      train_seconds=sum(r["seconds"] for r in result.history), wall_seconds=time.perf_counter() - started,
      device=f"{device.platform}: {device.device_kind}", num_devices=mesh.size if mesh is not None else 1,
      jax_version=jax.__version__)
  print(f"test accuracy {final['test_accuracy']:.2%} after {final['epoch']} epochs"
        f" (compile {result.compile_seconds:.2f} s, training {sum(r['seconds'] for r in result.history):.2f} s);"
        f" wrote {out}/metrics.json, checkpoint.npz" + "".join(f", {p}" for p in plots))
  return 0


def run(args):
  """Runs ``jaxbp train``; returns the exit status."""
  started = time.perf_counter()
  missing = _missing_extras(args)
  if missing:
    print(f"jaxbp train: missing {', '.join(missing)}; install the training extra: pip install \"jaxbp[train]\"",
          file=sys.stderr)
    return 1
  plotting = None if args.no_plot else threading.Thread(target=_import_matplotlib, daemon=True)
  if plotting is not None:  # import it while XLA compiles (the compiler releases the GIL): ~1 s saved
    plotting.start()
  from jaxbp.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from jaxbp.data import DataError  # pylint: disable=import-outside-toplevel
  try:
    return _train(args, started)
  except (DataError, CheckpointError, ValueError) as e:
    print(f"jaxbp train: error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:
    if type(e).__name__ != "NonFiniteError":
      raise
    print(f"jaxbp train: stopped: {e}", file=sys.stderr)
    return 3
  except KeyboardInterrupt:
    print("jaxbp train: interrupted; the last finished epoch is in OUT/checkpoint.npz: add --resume --out OUT",
          file=sys.stderr)
    return 130
