"""The ``sharded`` check: the rule's VJP with its inputs split over a ``Mesh`` of 8 host devices.

JAX fixes the number of host devices when it starts, so the check runs in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. The rule and its reference travel by name
(``module:qualname``), the inputs by pickle: a rule defined inside a function, or in ``__main__``,
cannot be sent, and the check is skipped with that reason. Every array input whose leading axis is a
multiple of 8 is split on it (the batch axis); the others are replicated.
"""

import importlib
import os
import pickle
import subprocess
import sys
import tempfile

import jax
import numpy as np

from jaxbp.check._compare import array_entry
from jaxbp.check._compare import failed

DEVICES = 8
TIMEOUT_S = 300


def host_devices_env(n: int, **more: str) -> dict[str, str]:
  """The environment of a subprocess with ``n`` CPU host devices: this process's, with its XLA_FLAGS kept
  and the device count added (and ``more`` variables set)."""
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", **more)


def _resolve(module, qualname):
  obj = importlib.import_module(module)
  for part in qualname.split("."):
    obj = getattr(obj, part)
  return obj


def _importable(f):
  module, qualname = getattr(f, "__module__", None), getattr(f, "__qualname__", "")
  if not module or module == "__main__" or "<" in qualname:
    return None
  try:
    obj = _resolve(module, qualname)
  except (ImportError, AttributeError):
    return None
  return (module, qualname) if obj is f else None


def sharded_entries(fn, ref, spec, u, tol, skipped):
  names = [_importable(fn), _importable(ref)]
  if None in names:
    skipped.append(("sharded", "the rule", "the rule or its reference is not importable as module:qualname"
                    " (a subprocess must find it by name)"))
    return []
  leaves = list(spec.leaves)
  if any(jax.dtypes.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.extended) for a in leaves):
    skipped.append(("sharded", "the rule", "a PRNG key input cannot be sent to the subprocess"))
    return []
  if not any(np.ndim(leaves[i]) and np.shape(leaves[i])[0] % DEVICES == 0 for i in spec.diff):
    skipped.append(("sharded", "the rule", f"no differentiable input has a leading axis divisible by {DEVICES}"))
    return []
  job = {"names": names, "leaves": [np.asarray(a) if hasattr(a, "shape") else a for a in leaves],
         "treedef": spec.treedef, "kwargs": spec.kwargs, "diff": spec.diff,
         "u": jax.tree.map(np.asarray, u), "x64": bool(jax.config.jax_enable_x64)}  # type: ignore[attr-defined]
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "job.pkl")
    with open(path, "wb") as f:
      pickle.dump(job, f)
    env = host_devices_env(DEVICES, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", f"from jaxbp.check._sharded import child; child({path!r})"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode:
      last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
      return [failed("sharded", "the rule", f"raised in the {DEVICES}-device subprocess: {last[:300]}")]
    with open(path + ".out", "rb") as f:
      got, want = pickle.load(f)
  return [array_entry("sharded", spec.labels[i], g, w, tol(g.dtype), leaves[i].dtype, np.shape(leaves[i]))
          for i, g, w in zip(spec.diff, got, want)]


def child(path: str) -> None:
  """In the subprocess: the rule's VJP on sharded inputs, and the reference's on unsharded ones."""
  with open(path, "rb") as f:
    job = pickle.load(f)
  jax.config.update("jax_enable_x64", job["x64"])
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec  # pylint: disable=import-outside-toplevel
  fn, ref = (_resolve(m, q) for m, q in job["names"])
  mesh = Mesh(np.array(jax.devices()), ("batch",))
  leaves, diff = job["leaves"], job["diff"]

  def bound(f, base):
    def g(*x):
      full = list(base)
      for i, a in zip(diff, x):
        full[i] = a
      return f(*jax.tree.unflatten(job["treedef"], full), **job["kwargs"])
    return g

  def place(a):
    split = np.ndim(a) and np.shape(a)[0] % len(jax.devices()) == 0
    return jax.device_put(a, NamedSharding(mesh, PartitionSpec("batch") if split else PartitionSpec()))
  sharded = [place(a) if hasattr(a, "shape") else a for a in leaves]
  vjp = lambda f, base: jax.jit(lambda *x: jax.vjp(bound(f, base), *x)[1](job["u"]))
  got = vjp(fn, sharded)(*[sharded[i] for i in diff])
  want = vjp(ref, leaves)(*[leaves[i] for i in diff])
  with open(path + ".out", "wb") as out:
    pickle.dump(([np.asarray(a) for a in got], [np.asarray(a) for a in want]), out)
