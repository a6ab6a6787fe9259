"""Where ``jaxbp train``'s data comes from, as its flags say, and loading it: a generated ``--task``, a
``--data`` file or the bundled digits; and ``--init-from``'s checkpoint."""

import argparse
import importlib.util
import os
from typing import Any

from jaxbp import models


def tasks_module() -> Any:
  """``jaxbp.train.tasks`` (generated sequence tasks: ``TASKS`` and ``load_task``) if it is there, else None."""
  if importlib.util.find_spec("jaxbp.train.tasks") is None:
    return None
  import jaxbp.train.tasks as tasks  # pylint: disable=import-outside-toplevel
  return tasks if hasattr(tasks, "TASKS") and hasattr(tasks, "load_task") else None


def source(args: argparse.Namespace, family: models.Family) -> dict[str, Any]:
  """Where the data comes from, as the flags say; recorded in the checkpoint to resume from. A sequence
  family with neither --task nor --data trains on the default generated task (``default_task``)."""
  length = getattr(args, "task_length", None)
  sized = {} if length is None else {"length": length}
  if not getattr(args, "task", None) and not args.data and family.data == "tokens":
    tasks = tasks_module()
    if tasks is not None:
      tasks.check_length(tasks.DEFAULT_TASK, length)  # a TaskError: said as --task-length by run()
      return {"task": tasks.DEFAULT_TASK, **sized}
  if getattr(args, "task", None):
    if args.data:
      raise ValueError("--task and --data both name the data: give one of them")
    tasks_module().check_length(args.task, length)
    return {"task": args.task, **sized}
  if length is not None:
    raise ValueError("--task-length sets the length of a --task; there is none")
  if hasattr(args, "label_column") and not (args.data and args.data.lower().endswith(".csv")):
    raise ValueError("--label-column names the label column of a .csv --data file; "
                     + ("there is no --data" if not args.data else f"{args.data} is not a .csv"))
  if not args.data:
    return {}
  source = {"path": os.path.abspath(args.data)}
  return {**source, "label_column": getattr(args, "label_column", "label")} if args.data.lower().endswith(".csv") \
      else source


def load(source: dict[str, Any], seed: int) -> Any:
  from jaxbp.train import data as data_lib  # pylint: disable=import-outside-toplevel
  if "task" in source:
    tasks = tasks_module()
    if tasks is None:
      raise ValueError(f"this run was trained on the task {source['task']!r}, but jaxbp.train.tasks is not"
                       " installed")
    return tasks.load_task(source["task"], seed=seed, **{k: v for k, v in source.items() if k == "length"})
  return data_lib.load_dataset(source.get("path"), source.get("label_column", "label"))


def init_from(path: str) -> Any:
  """The checkpoint ``--init-from`` names (a run's --out directory, or its checkpoint file), read once."""
  from jaxbp import train as train_lib  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise ValueError(f"--init-from {path}: no such run directory or checkpoint file")
  if os.path.isdir(path):
    inside = os.path.join(path, train_lib.CHECKPOINT)
    if not os.path.exists(inside):
      raise ValueError(f"--init-from {path}: the directory holds no {train_lib.CHECKPOINT} (not a jaxbp train --out"
                       " directory, or its first epoch never finished)")
    path = inside
  return train_lib.read_checkpoint(path)


def started_from(start: Any) -> str:
  """The banner's note of the parameters a run starts from."""
  return (f"; starting from the parameters of {start.path} (epoch {start.epoch} of a {start.config.family.name}"
          f" run on {start.data.get('name')})")
