"""TensorBoard event files for ``jaxbp train --tensorboard DIR``, written through ``tensorboardX``.

One step per epoch (the step is the epoch's number, so a resumed run continues the curves). Tags:

| tag | what |
|---|---|
| ``loss/train``, ``accuracy/train`` | means over the epoch's steps (measured with dropout, if any) |
| ``loss/test``, ``accuracy/test`` | the held-out set after the epoch |
| ``token_accuracy/train``, ``token_accuracy/test`` | sequence tasks: per answer token |
| ``learning_rate`` | the rate of the epoch's last update (the run's optax schedule) |
| ``grad_norm/<matrix>`` | ‖∂L/∂W‖ of each weight matrix, mean over the epoch's steps (``layers.0.w``, ...) |
| ``grad_norm`` (histogram) | that epoch's norms of all weight matrices: how widely they spread (note 004) |
| ``weights/<matrix>`` (histogram) | each weight matrix's entries after the epoch |

The gradient norms are those of ``--grad-flow`` (``jaxbp.train.layer_grad_norms`` in the jitted step);
``fit`` keeps no gradient itself, so the histograms are of the norms and of the weights.
"""

import importlib.util
import os
import re
from typing import Any

import jax
import numpy as np

from jaxbp.train.optim import make_schedule
from jaxbp.train.step import layer_grad_norms

EVENTS = "events.out.tfevents"  # how every TensorBoard event file's name starts


def check_logdir(logdir: str, resume: bool) -> None:
  """ValueError (naming ``--tensorboard``) unless tensorboardX is installed and ``logdir`` can take this run."""
  if importlib.util.find_spec("tensorboardX") is None:
    raise ValueError('--tensorboard needs tensorboardX, which is not installed: pip install "jaxbp[tensorboard]"')
  if os.path.exists(logdir) and not os.path.isdir(logdir):
    raise ValueError(f"--tensorboard {logdir}: is a file, not a directory")
  if not resume and os.path.isdir(logdir) and any(f.startswith(EVENTS) for f in os.listdir(logdir)):
    raise ValueError(f"--tensorboard {logdir} already holds event files: TensorBoard would draw the two runs as"
                     " one; choose another directory (or --resume the run that wrote them)")


def layer_name(path: str) -> str:
  """``layers.0.w`` for the key path ``['layers'][0]['w']`` (``jax.tree_util.keystr``), a tag's last part."""
  return ".".join(re.findall(r"\[['\"]?([^'\"\]]+)['\"]?\]", path)) or path


def _host(x: Any) -> np.ndarray:
  """A replicated array's value on this host (one process's shard is the whole array)."""
  return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


class TensorBoardWriter:
  """Writes the tags above to ``logdir``, called with each epoch's record and state by ``jaxbp train``'s observer.

  The event file is created at the first epoch, so a run refused before training leaves nothing behind.

  Args:
    logdir: the directory (created if missing).
    config: the run's ``TrainConfig``, for the learning-rate schedule.
    steps_per_epoch: micro-batches per epoch (training examples // batch size).
  """

  def __init__(self, logdir: str, config: Any, steps_per_epoch: int):
    self.logdir, self.steps = logdir, steps_per_epoch
    self.accumulate = config.accumulate
    self.schedule = make_schedule(config, steps_per_epoch * config.epochs // config.accumulate)
    self._writer: Any = None
    self._names: list[str] | None = None

  def learning_rate(self, epoch: int) -> float:
    """The rate of the last update of ``epoch`` (1-based)."""
    return float(self.schedule(max(epoch * self.steps // self.accumulate - 1, 0)))

  def __call__(self, record: dict, state: Any) -> None:
    if self._writer is None:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(self.logdir)
      self._names = list(jax.eval_shape(layer_grad_norms, state.params))
    w, epoch = self._writer, record["epoch"]
    for what in ("loss", "accuracy", "token_accuracy"):
      for split in ("train", "test"):
        if f"{split}_{what}" in record:
          w.add_scalar(f"{what}/{split}", record[f"{split}_{what}"], epoch)
    w.add_scalar("learning_rate", self.learning_rate(epoch), epoch)
    if "layer_grad_norms" in record:
      for name, norm in zip(self._names or [], record["layer_grad_norms"]):
        w.add_scalar(f"grad_norm/{layer_name(name)}", norm, epoch)
      w.add_histogram("grad_norm", np.asarray(record["layer_grad_norms"]), epoch)
    leaves = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    for name in self._names or []:
      w.add_histogram(f"weights/{layer_name(name)}", _host(leaves[name]).ravel(), epoch)
    w.flush()

  def close(self) -> None:
    """Flushes and closes the event file (if one was opened)."""
    if self._writer is not None:
      self._writer.close()
