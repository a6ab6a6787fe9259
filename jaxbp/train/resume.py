"""Continuing a run: the checkpoint read once and validated, the data's identity, which configs may continue.

A checkpoint's metadata records everything that decides the run: the :class:`TrainConfig`, the epochs done
and their history, and the data (its name, where it was loaded from, and a SHA-256 of the arrays trained on
and tested on). Everything here runs before anything is compiled.
"""

import hashlib
from typing import Any, NamedTuple

import numpy as np

from jaxbp.train import checkpoint as ckpt
from jaxbp.train.config import ConfigError
from jaxbp.train.config import TrainConfig

CHECKPOINT = "checkpoint.npz"


class Resumed(NamedTuple):
  """A checkpoint, read once: its config, progress and data identity, and the stored leaves."""
  path: str
  config: TrainConfig
  epoch: int             # epochs finished
  history: list          # one record per finished epoch
  data: dict             # {"name", "sha256", "source", "classes"}: see data_identity
  doc: dict              # the file's document and arrays, for checkpoint.restore into the compiled template
  arrays: list


def data_identity(data: Any, source: dict | None = None) -> dict[str, Any]:
  """``{"name", "sha256", "source", "classes"}`` of a data set: the SHA-256 covers every array ``fit`` uses
  (train and test, with their shapes and dtypes), so any change to the file, the split or the loading shows;
  ``classes`` (where the data has them) is the original label of each class index, ``classes[i]`` for
  index ``i`` (e.g. ``["setosa", "versicolor", "virginica"]``)."""
  h = hashlib.sha256()
  for split in ("train", "test"):
    for part in ("x", "y", "mask", "segments"):
      a = getattr(data, f"{part}_{split}", None)
      if a is not None:
        a = np.ascontiguousarray(a)
        h.update(f"{part}_{split}{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
  identity = {"name": str(data.name), "sha256": h.hexdigest(), "source": dict(source or {})}
  classes = getattr(data, "classes", None)
  if classes is not None:
    identity["classes"] = [c if isinstance(c, str) else int(c) for c in classes]
  return identity


def _meta_error(path: str, what: str) -> ckpt.CheckpointError:
  return ckpt.CheckpointError(f"checkpoint {path}: {what}; it is not a jaxbp train checkpoint or is damaged")


def read(path: str) -> Resumed:
  """Reads the checkpoint at ``path`` once and validates its metadata, the one check of a run's metadata:
  :class:`CheckpointError` naming the file and the first field that is wrong (``checkpoint.read`` checks
  the file and its document's structure; the run's config, epochs, history and data are checked here)."""
  doc, arrays = ckpt.read(path)
  meta = doc["meta"]
  try:
    config = TrainConfig.from_json(meta.get("config"))
  except ValueError as e:
    raise _meta_error(path, f"its config is unusable ({e})") from None
  epoch, history, data = meta.get("epoch"), meta.get("history"), meta.get("data")
  if not _is_int(epoch) or not 0 < epoch <= config.epochs:
    raise _meta_error(path, f"epoch {epoch!r} is not a whole number in 1..{config.epochs}")
  if not isinstance(history, list) or len(history) != epoch:
    raise _meta_error(path, f"its history does not hold one record for each of its {epoch} epochs")
  for i, record in enumerate(history):
    _check_record(path, i, record)
  if not isinstance(data, dict) or not isinstance(data.get("sha256"), str) or not isinstance(data.get("source"), dict):
    raise _meta_error(path, "it records no data identity (written before jaxbp recorded one?)")
  classes = data.get("classes", [])
  if not isinstance(classes, list) or not all(isinstance(c, str | int) and not isinstance(c, bool) for c in classes):
    raise _meta_error(path, "its data's 'classes' is not a list of class names or integers")
  return Resumed(path, config, epoch, history, data, doc, arrays)


RECORD_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")  # every record's


def _check_record(path: str, i: int, record: Any) -> None:
  """``history[i]`` is epoch i + 1's record: ``RECORD_FIELDS`` numbers, other entries numbers or lists of them."""
  if not isinstance(record, dict) or record.get("epoch") != i + 1 or not _is_int(record["epoch"]):
    raise _meta_error(path, f"history[{i}] is not the record of epoch {i + 1}")
  missing = [k for k in RECORD_FIELDS if k not in record]
  if missing:
    raise _meta_error(path, f"history[{i}] lacks {', '.join(missing)}")
  for k, v in record.items():
    if not (_is_number(v) or (k not in RECORD_FIELDS and isinstance(v, list) and all(map(_is_number, v)))):
      raise _meta_error(path, f"history[{i}][{k!r}] is {type(v).__name__}, not a number")


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool)


_WHY = {
    "cosine": "it decays the rate to 0 at the last of those epochs",
    "warmup": "its warm-up lasts the first 10% of those epochs' updates",
    "warmup-cosine": "its warm-up and its decay to 0 are fractions of those epochs' updates",
}


def continue_config(resumed: Resumed, epochs: int | None = None) -> TrainConfig:
  """The config that continues ``resumed``, for ``epochs`` epochs in all (``None``: as saved).

  A constant learning rate may run for more (or fewer, but not fewer than done) epochs; a schedule that
  depends on the run's length cannot change it, since that would change the rate of the epochs already
  trained: :class:`ConfigError` naming ``epochs``, saying why and what to do. A finished run is refused:
  there is nothing to continue. ``fit`` checks this itself (``check_continues``); call it for the config
  to show before ``fit`` runs.
  """
  saved, done = resumed.config, resumed.epoch
  epochs = saved.epochs if epochs is None else epochs
  if epochs != saved.epochs and saved.schedule != "constant":
    raise ConfigError("epochs", f"{epochs} cannot resume {resumed.path}: its {saved.schedule} schedule was built"
                      f" for {saved.epochs} epochs and {_WHY[saved.schedule]}, so another length would change the"
                      f" rate of the {done} epochs already trained; start a new run of {epochs} epochs (or train"
                      " with the constant schedule to extend a run later)")
  if epochs <= done:
    more = f"; give more than {done} epochs to train on" if saved.schedule == "constant" else ""
    raise ConfigError("epochs", f"{epochs} cannot resume {resumed.path}: it has already trained {done}{more}")
  return saved._replace(epochs=epochs)


def check_continues(config: TrainConfig, resumed: Resumed, data_id: dict) -> None:
  """Raises ValueError unless ``config`` and the data continue ``resumed`` (only ``epochs`` may differ)."""
  saved = resumed.config
  diff = [f"{f}={getattr(saved, f)!r} (now {getattr(config, f)!r})"
          for f in TrainConfig._fields if f != "epochs" and getattr(saved, f) != getattr(config, f)]
  if diff:
    raise ValueError(f"cannot resume {resumed.path}: it was trained with {', '.join(diff)}")
  continue_config(resumed, config.epochs)
  if data_id["sha256"] != resumed.data["sha256"]:
    raise ValueError(f"cannot resume {resumed.path}: it was trained on {resumed.data.get('name')} (sha256"
                     f" {resumed.data['sha256'][:12]}…), not on {data_id['name']} (sha256 {data_id['sha256'][:12]}…);"
                     " resume with the run's own data, or start a new run")
  if "classes" in resumed.data and resumed.data["classes"] != data_id.get("classes"):
    raise ValueError(f"cannot resume {resumed.path}: its class indices 0..{len(resumed.data['classes']) - 1} stand"
                     f" for {_names(resumed.data['classes'])}, the data now gives {_names(data_id.get('classes'))};"
                     " resume with the run's own labels, or start a new run")


def _names(classes: list | None) -> str:
  """``['setosa', 'versicolor', ...]``: the start of a class list, for messages."""
  if classes is None:
    return "no class names"
  shown = ", ".join(repr(c) for c in classes[:4])
  return f"[{shown}{', ...' if len(classes) > 4 else ''}]"
