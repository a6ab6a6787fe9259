"""Data and model parallelism over a ``Mesh``: the mesh, the shardings of the batch and of the state, and
placing host arrays on devices (one process or many). JAX's own sharding only: ``NamedSharding`` of the
family's ``partition_specs``, XLA's partitioner does the rest.
"""

from typing import Any

import jax
import numpy as np

from jaxbp import models
from jaxbp.models import ConfigError

__all__ = ["check_divisible", "check_mesh", "make_mesh", "place", "shardings", "state_shardings"]


def make_mesh(num_devices: int, model_parallel: int = 1) -> jax.sharding.Mesh:
  """A ``Mesh`` over the first ``num_devices`` devices (all processes' devices): 1-D ``("data",)``, or with
  ``model_parallel`` N > 1 of shape (num_devices / N, N) with axes ``("data", "model")``.

  Raises :class:`ConfigError` when the devices are not there or N does not divide them.
  """
  devices = jax.devices()
  if not 1 <= num_devices <= len(devices):
    hint = ("; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N devices"
            if jax.default_backend() == "cpu" else "")
    raise ConfigError("num_devices", f"must be between 1 and {len(devices)} (the devices JAX sees), got"
                      f" {num_devices}{hint}")
  if model_parallel < 1:
    raise ConfigError("model_parallel", f"must be positive, got {model_parallel}")
  if num_devices % model_parallel:
    raise ConfigError("model_parallel", f"{model_parallel} must divide the {num_devices} devices (the mesh is"
                      " devices/N × N)")
  if model_parallel == 1:
    return jax.sharding.Mesh(np.array(devices[:num_devices]), ("data",))
  grid = np.array(devices[:num_devices]).reshape(num_devices // model_parallel, model_parallel)
  return jax.sharding.Mesh(grid, ("data", "model"))


def shardings(mesh: jax.sharding.Mesh) -> tuple[jax.sharding.NamedSharding, jax.sharding.NamedSharding]:
  """``(replicated, sharded along "data")``."""
  P = jax.sharding.PartitionSpec
  return jax.sharding.NamedSharding(mesh, P()), jax.sharding.NamedSharding(mesh, P("data"))


def state_shardings(mesh: jax.sharding.Mesh, state: Any, family: models.Family) -> Any:
  """A ``NamedSharding`` per leaf of a ``TrainState`` (arrays or their shapes): replicated, except,
  on a mesh with a ``"model"`` axis, the parameters and every optimiser-state subtree shaped like them
  (Adam's moments, accumulated gradients) as the family's ``partition_specs`` say."""
  P = jax.sharding.PartitionSpec
  replicated = jax.sharding.NamedSharding(mesh, P())
  everywhere = lambda tree: jax.tree.map(lambda _: replicated, tree)
  if "model" not in mesh.axis_names or family.partition_specs is None:
    return everywhere(state)
  named = jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec), family.partition_specs(state.params),
                       is_leaf=lambda x: isinstance(x, P))
  structure = jax.tree.structure(state.params)
  like_params = lambda x: bool(jax.tree.structure(x) == structure)  # type: ignore[operator]
  opt = jax.tree.map(lambda x: named if like_params(x) else replicated, state.opt_state, is_leaf=like_params)
  return state._replace(params=named, model_state=everywhere(state.model_state), opt_state=opt,
                        step=replicated, key=replicated)


def check_divisible(mesh: jax.sharding.Mesh, params: Any, family: models.Family) -> None:
  """ConfigError naming ``model_parallel`` when a parameter's axis that ``family.partition_specs`` splits
  over the mesh is not a multiple of the mesh axes' size (``NamedSharding`` splits evenly). ``params`` may
  be shapes (``jax.eval_shape``)."""
  if "model" not in mesh.axis_names or family.partition_specs is None:
    return
  specs = jax.tree.leaves(family.partition_specs(params), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(params)[0], specs):
    for axis, names in enumerate(spec):
      parts = int(np.prod([mesh.shape[n] for n in ((names,) if isinstance(names, str) else names or ())]))
      if leaf.shape[axis] % parts:
        raise ConfigError("model_parallel", f"{mesh.shape['model']} must divide axis {axis} of the parameter"
                          f" {jax.tree_util.keystr(path)} (size {leaf.shape[axis]})")


def place(tree: Any, sharding: Any) -> Any:
  """Puts host arrays on devices with ``sharding`` (one ``Sharding``, or a pytree of them shaped like
  ``tree``); every process must hold the same global values."""
  if sharding is None:
    return jax.device_put(tree)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  def one(x, s):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x), s), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, sharding), tree)
  return jax.tree.map(one, tree, sharding)


def check_mesh(config: Any, spec: models.DataSpec, mesh: jax.sharding.Mesh | None) -> None:
  """The mesh has the ``"model"`` axis that ``config.model_parallel`` asks for, and it divides what it
  splits; :class:`ConfigError` naming ``model_parallel`` otherwise."""
  n, axis = config.model_parallel, dict(mesh.shape).get("model", 1) if mesh is not None else 1
  if n != axis:
    raise ConfigError("model_parallel", f"{n} needs a mesh whose 'model' axis has {n} devices"
                      f" (make_mesh(devices, {n})); this one has {axis}")
  if n > 1:
    family = config.family
    params = jax.eval_shape(lambda k: family.init(k, config.model, spec)[0], jax.random.key(0))
    check_divisible(mesh, params, family)  # type: ignore[arg-type]
