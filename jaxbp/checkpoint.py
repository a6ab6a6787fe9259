"""Checkpoints that cannot execute code when loaded, written atomically.

One file, ``.npz`` (a zip of ``.npy`` arrays, read back with ``allow_pickle=False``): every leaf of the
saved pytree is an array ``leaf_<i>``, and a JSON document (paths of the leaves, their shapes and dtypes,
which leaves are PRNG keys, and the caller's metadata: config, epoch, history) is stored as the bytes of
one more uint8 array, ``__meta__``. One file rather than an ``.npz`` beside a ``.json`` so that a single
``os.replace`` switches from the old checkpoint to the new one: a crash mid-write leaves the old file
untouched. PRNG keys are stored as their raw uint32 key data and re-wrapped on load.

Loading needs a *template*: a pytree of the same structure (freshly initialised parameters and optimiser
state), whose tree structure is filled in with the stored leaves after the paths, shapes and dtypes are
checked. Nothing about the structure is ever executed from the file.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "jaxbp-checkpoint-1"
META_KEY = "__meta__"


class CheckpointError(ValueError):
  """A checkpoint that is missing, truncated, corrupted, or written for a different model."""


def _flatten(tree):
  import jax  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [jax.tree_util.keystr(p) for p, _ in leaves], [x for _, x in leaves], treedef


def _is_key(x):
  import jax  # pylint: disable=import-outside-toplevel
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save(path, tree, meta=None):
  """Writes ``tree`` (any pytree of arrays, PRNG keys included) and JSON ``meta`` to ``path`` atomically.

  Args:
    path: destination file, conventionally ``.npz``; its directory must exist.
    tree: the pytree to save, e.g. a ``TrainState``.
    meta: JSON-serialisable metadata returned by :func:`load` (config, epoch, metrics history).
  """
  import jax  # pylint: disable=import-outside-toplevel
  paths, leaves, _ = _flatten(tree)
  arrays, key_impls = {}, {}
  for i, leaf in enumerate(leaves):
    if _is_key(leaf):
      key_impls[str(i)] = str(jax.random.key_impl(leaf))
      leaf = jax.random.key_data(leaf)
    arrays[f"leaf_{i}"] = np.asarray(jax.device_get(leaf))
  doc = {"format": FORMAT, "paths": paths, "keys": key_impls, "meta": meta or {}}
  arrays[META_KEY] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first ** as allow_pickle
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read(path):
  """Reads a checkpoint without a template: ``(doc, arrays)``, the JSON document and the leaf arrays.

  Raises:
    CheckpointError: the file is missing, truncated, corrupted or not a jaxbp checkpoint.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"checkpoint {path}: no such file")
  try:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
      if META_KEY not in f.files:
        raise CheckpointError(f"checkpoint {path}: not a jaxbp checkpoint (no {META_KEY} entry)")
      doc = json.loads(f[META_KEY].tobytes().decode("utf-8"))
      arrays = [f[f"leaf_{i}"] for i in range(len(doc["paths"]))]
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}: {e});"
                          " delete it or restore a copy") from None
  if doc.get("format") != FORMAT:
    raise CheckpointError(f"checkpoint {path}: format {doc.get('format')!r}, expected {FORMAT!r}")
  return doc, arrays  # each array's shape and dtype come from its own .npy header; the zip CRC guards bytes


def load(path, template):
  """Restores a pytree saved by :func:`save` into the structure of ``template``.

  Args:
    path: the checkpoint file.
    template: a pytree with the same structure, shapes and dtypes (its values are ignored).

  Returns:
    ``(tree, meta)``: the restored pytree (leaves as ``jax.Array``, keys re-wrapped) and the metadata.

  Raises:
    CheckpointError: unreadable file, or a structure, shape or dtype that does not match ``template``.
  """
  doc, arrays = read(path)
  return restore(path, doc, arrays, template), doc["meta"]


def restore(path, doc, arrays, template):
  """The pytree of ``(doc, arrays)`` from :func:`read` in the structure of ``template`` (see :func:`load`),
  for a caller that read the file once to decide the template; ``path`` names the file in errors."""
  import jax  # pylint: disable=import-outside-toplevel
  paths, leaves, treedef = _flatten(template)
  if paths != doc["paths"]:
    extra = sorted(set(doc["paths"]) - set(paths))[:3]
    missing = sorted(set(paths) - set(doc["paths"]))[:3]
    raise CheckpointError(f"checkpoint {path} was written for a different model or optimiser"
                          f" (in the file only: {extra or '-'}; expected but absent: {missing or '-'})")
  restored = []
  for i, (p, want, got) in enumerate(zip(paths, leaves, arrays)):
    if (str(i) in doc["keys"]) != _is_key(want):
      saved = "a PRNG key" if str(i) in doc["keys"] else "an array"
      raise CheckpointError(f"checkpoint {path}: {p} was saved as {saved}, the model's is not")
    if str(i) in doc["keys"]:
      restored.append(jax.random.wrap_key_data(got, impl=doc["keys"][str(i)]))
      continue
    want_shape = np.shape(want)
    want_dtype = want.dtype if hasattr(want, "dtype") else np.asarray(want).dtype
    if got.dtype.kind == "V" and got.dtype.itemsize == np.dtype(want_dtype).itemsize:
      got = got.view(want_dtype)  # NumPy writes ml_dtypes (bfloat16, ...) as raw void bytes
    if got.shape != tuple(want_shape) or got.dtype != want_dtype:
      raise CheckpointError(f"checkpoint {path}: {p} has shape {got.shape} {got.dtype},"
                            f" the model expects {tuple(want_shape)} {want_dtype}")
    restored.append(jax.numpy.asarray(got))
  return jax.tree_util.tree_unflatten(treedef, restored)
