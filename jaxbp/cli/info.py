"""Print the JAX set-up jaxbp runs on: versions, backend, devices, dtype defaults."""

import importlib.metadata
import sys

HELP = "show jax/jaxlib/optax versions, the backend, the devices and the dtype defaults"


def configure(parser):
  """``jaxbp info`` takes no flags."""
  del parser


def _version(dist):
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def run(args):
  """Prints one ``name: value`` line per fact; returns 0."""
  del args
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  x64 = bool(jax.config.jax_enable_x64)
  lines = [
      ("python", sys.version.split()[0]),
      *((d, _version(d)) for d in ("jaxbp", "jax", "jaxlib", "optax", "chex", "scikit-learn", "matplotlib", "tqdm")),
      ("backend", jax.default_backend()),
      ("processes", f"{jax.process_count()} (this is {jax.process_index()})"),
      ("devices", f"{jax.device_count()} ({jax.local_device_count()} local)"),
      *((f"  device {d.id}", f"{d.platform}: {d.device_kind}") for d in jax.devices()),
      ("x64 enabled", f"{x64} (JAX_ENABLE_X64=1 turns it on)"),
      ("default float", str(jnp.asarray(1.0).dtype)),
      ("default int", str(jnp.asarray(1).dtype)),
      ("matmul precision", str(jax.config.jax_default_matmul_precision or "default")),
  ]
  width = max(len(k) for k, _ in lines)
  for k, v in lines:
    print(f"{k:<{width}}  {v}")
  return 0
