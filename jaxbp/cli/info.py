"""Print the JAX set-up jaxbp runs on: versions, backend, devices, dtype defaults."""

import argparse
import importlib.metadata
import sys
from typing import Any

HELP = "show jax/jaxlib/optax versions, the backend, the devices and the dtype defaults"


def configure(parser: argparse.ArgumentParser) -> None:
  """``jaxbp info`` takes no flags."""
  del parser


def _version(dist: str) -> str:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def run(args: argparse.Namespace) -> int:
  """Prints one ``name: value`` line per fact; returns 0."""
  del args
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  import jaxbp  # pylint: disable=import-outside-toplevel
  flags: Any = jax.config  # its flags are attributes mypy cannot see
  x64 = bool(flags.jax_enable_x64)
  lines = [
      ("python", sys.version.split()[0]),
      ("jaxbp", jaxbp.__version__),
      *((d, _version(d)) for d in ("jax", "jaxlib", "optax", "chex", "scikit-learn", "matplotlib", "tqdm")),
      ("backend", jax.default_backend()),
      ("processes", f"{jax.process_count()} (this is {jax.process_index()})"),
      ("devices", f"{jax.device_count()} ({jax.local_device_count()} local)"),
      *((f"  device {d.id}", f"{d.platform}: {d.device_kind}") for d in jax.devices()),
      ("x64 enabled", f"{x64} (JAX_ENABLE_X64=1 turns it on)"),
      ("default float", str(jnp.asarray(1.0).dtype)),
      ("default int", str(jnp.asarray(1).dtype)),
      ("matmul precision", str(flags.jax_default_matmul_precision or "default")),
  ]
  width = max(len(k) for k, _ in lines)
  for k, v in lines:
    print(f"{k:<{width}}  {v}")
  return 0
