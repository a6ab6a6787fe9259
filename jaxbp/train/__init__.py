"""jaxbp.train: training on the manual rules, as a library; ``jaxbp train`` is its command.

One module per topic: ``loop`` (:func:`fit`, the whole run), ``step`` (the jitted loss, step and
evaluation), ``sharding`` (meshes and placement), ``config`` (:class:`TrainConfig` and its checks),
``optim`` (optax optimisers and schedules by name), ``resume`` (a checkpoint read once, which runs may
continue it), ``checkpoint`` (the file format), ``data`` (the digits, ``.npz``/``.csv``) and ``tasks``
(generated sequence tasks). Every public name is re-exported here.
"""

from jaxbp.train.config import ConfigError
from jaxbp.train.config import TrainConfig
from jaxbp.train.config import check_config
from jaxbp.train.loop import FIT_FILES
from jaxbp.train.loop import IN_FLIGHT
from jaxbp.train.loop import FitObserver
from jaxbp.train.loop import FitResult
from jaxbp.train.loop import NonFiniteError
from jaxbp.train.loop import epoch_order
from jaxbp.train.loop import fit
from jaxbp.train.loop import run_steps
from jaxbp.train.loop import write_metrics
from jaxbp.train.optim import OPTIMIZERS
from jaxbp.train.optim import SCHEDULES
from jaxbp.train.optim import make_optimizer
from jaxbp.train.optim import make_schedule
from jaxbp.train.resume import CHECKPOINT
from jaxbp.train.resume import Resumed
from jaxbp.train.resume import continue_config
from jaxbp.train.resume import data_identity
from jaxbp.train.resume import read as read_checkpoint
from jaxbp.train.sharding import make_mesh
from jaxbp.train.sharding import place
from jaxbp.train.sharding import state_shardings
from jaxbp.train.step import TrainState
from jaxbp.train.step import data_spec
from jaxbp.train.step import default_donate
from jaxbp.train.step import init_state
from jaxbp.train.step import layer_grad_norms
from jaxbp.train.step import make_eval_fn
from jaxbp.train.step import make_loss_fn
from jaxbp.train.step import make_train_step

__all__ = [
    "CHECKPOINT",
    "ConfigError",
    "FIT_FILES",
    "FitObserver",
    "FitResult",
    "IN_FLIGHT",
    "NonFiniteError",
    "OPTIMIZERS",
    "Resumed",
    "SCHEDULES",
    "TrainConfig",
    "TrainState",
    "check_config",
    "continue_config",
    "data_identity",
    "data_spec",
    "default_donate",
    "epoch_order",
    "fit",
    "init_state",
    "layer_grad_norms",
    "make_eval_fn",
    "make_loss_fn",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "place",
    "read_checkpoint",
    "run_steps",
    "state_shardings",
    "write_metrics",
]
