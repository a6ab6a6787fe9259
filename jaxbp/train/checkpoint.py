"""Checkpoints that cannot execute code when loaded, written atomically.

One file, ``.npz`` (a zip of ``.npy`` arrays, read back with ``allow_pickle=False``): every leaf of the
saved pytree is an array ``leaf_<i>``, and a JSON document (paths of the leaves, which leaves are PRNG keys,
and the caller's metadata: config, epoch, history) is stored as the bytes of one more uint8 array,
``__meta__``. One file rather than an ``.npz`` beside a ``.json`` so that a single ``os.replace`` switches
from the old checkpoint to the new one: a crash or a full disk mid-write leaves the old file untouched. The
new file is first written to ``.jaxbp-tmp-<pid>-<random>.npz`` in the same folder; a write killed so hard
that it cannot remove its temporary file (SIGKILL, power loss) leaves it behind, and the next save or load in
that folder removes it (only files with that name pattern, whose writer is no longer running on this machine,
and whose content is empty or starts as ``np.savez`` starts a checkpoint). PRNG keys are stored as their raw
uint32 key data and re-wrapped on load.

Loading needs a *template*: a pytree of the same structure (freshly initialised parameters and optimiser
state), whose tree structure is filled in with the stored leaves after the paths, shapes and dtypes are
checked. Nothing about the structure is ever executed from the file. Every way a file can be damaged ends in
:class:`CheckpointError`, one line naming the file and what is wrong: the zip's CRC-32 guards every byte of
every entry, and the JSON document's structure is checked field by field (:func:`check_doc`) before anything
reads it; a training run's metadata inside it is checked by ``jaxbp.train.resume.read``.
"""

from collections.abc import Sequence
import contextlib
import errno
import io
import json
import os
import re
import tempfile
from typing import Any
import zipfile

import numpy as np

__all__ = ["FORMAT", "META_KEY", "TMP_PREFIX", "CheckpointError", "check_doc", "load", "read", "restore", "save",
           "sweep"]

META_KEY = "__meta__"
TMP_PREFIX = ".jaxbp-tmp-"
_TMP_NAME = re.compile(r"\.jaxbp-tmp-(\d+)-[A-Za-z0-9_]+\.npz")
_LEGACY_TMP_NAME = re.compile(r"\.tmp-[a-z0-9_]{8}\.npz")  # what jaxbp wrote before, without a pid
_IN_FLIGHT: set[str] = set()  # temporary files this process is writing right now

FORMAT = "jaxbp-checkpoint-1"


class CheckpointError(ValueError):
  """A checkpoint that is missing, truncated, corrupted, unwritable, or written for a different model."""


def check_doc(path: str, doc: Any) -> None:
  """Checks the structure of a checkpoint's JSON document: every field :func:`read` and :func:`load` use.

  Raises:
    CheckpointError: naming ``path`` and the first field that is missing or of the wrong type.
  """
  if not isinstance(doc, dict):
    raise CheckpointError(f"checkpoint {path}: its document is {_json_type(doc)}, expected an object")
  if doc.get("format") != FORMAT:
    raise CheckpointError(f"checkpoint {path}: format {doc.get('format')!r}, expected {FORMAT!r}")
  paths = doc.get("paths", _MISSING)
  if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
    raise CheckpointError(f"checkpoint {path}: 'paths' is {_json_type(paths)}, expected a list of strings")
  keys = doc.get("keys", _MISSING)
  if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
    raise CheckpointError(f"checkpoint {path}: 'keys' is {_json_type(keys)}, expected an object of strings")
  for k in keys:
    if not (k.isdigit() and str(int(k)) == k and int(k) < len(paths)):
      raise CheckpointError(f"checkpoint {path}: 'keys' names leaf {k!r}, not one of the {len(paths)} leaves")
  if not isinstance(doc.get("meta"), dict):
    raise CheckpointError(f"checkpoint {path}: 'meta' is {_json_type(doc.get('meta', _MISSING))},"
                          " expected an object")


_MISSING = object()
_TYPE_NAMES = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "null"}


def _json_type(v):
  """``a list``, ``missing``: what a JSON value is, for messages."""
  return "missing" if v is _MISSING else _TYPE_NAMES.get(type(v), type(v).__name__)


def _flatten(tree):
  import jax  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [jax.tree_util.keystr(p) for p, _ in leaves], [x for _, x in leaves], treedef


def _is_key(x):
  import jax  # pylint: disable=import-outside-toplevel
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


# --- writing ---------------------------------------------------------------------------------------------

def save(path: str, tree: Any, meta: dict[str, Any] | None = None) -> None:
  """Writes ``tree`` (any pytree of arrays, PRNG keys included) and JSON ``meta`` to ``path`` atomically.

  Args:
    path: destination file, conventionally ``.npz``; its folder must exist.
    tree: the pytree to save, e.g. a ``TrainState``.
    meta: JSON-serialisable metadata returned by :func:`load` (config, epoch, metrics history).

  Raises:
    CheckpointError: the file cannot be written (folder missing, disk full, no permission); the previous
      checkpoint at ``path``, if any, is left as it was and no temporary file remains.
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
  _write_atomic(path, arrays)


def _write_atomic(path, arrays):
  """``np.savez`` into a temporary file beside ``path``, fsync, then ``os.replace`` onto ``path``."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint {path}: the folder {directory} does not exist")
  if os.path.isdir(path):
    raise CheckpointError(f"checkpoint {path} is a folder; expected a file name")
  sweep(directory)
  previous = "; the previous checkpoint is unchanged" if os.path.exists(path) else ""
  tmp = written = None
  try:
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=".npz", dir=directory)
    _IN_FLIGHT.add(tmp)
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    written = tmp
  except OSError as e:
    raise CheckpointError(f"checkpoint {path}: cannot write it ({_cause(e)}){previous}") from None
  finally:
    _IN_FLIGHT.discard(tmp)  # written or not, it is no longer being written
    if tmp is not None and written is None:  # failed or interrupted (KeyboardInterrupt too): remove it
      with contextlib.suppress(OSError):  # a read-only or vanished folder: the next sweep retries
        os.remove(tmp)


def _cause(e: OSError) -> str:
  """``No space left on device (ENOSPC)``: the reason of an OSError, one line, without its file name."""
  if e.errno is None:
    return str(e)
  return f"{os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"


# --- cleaning up after killed writes ---------------------------------------------------------------------

def sweep(directory: str) -> list[str]:
  """Removes the temporary files that killed checkpoint writes left in ``directory``; returns their names.

  A file is removed only if all of these hold, so that no file of a user's is ever touched: its name is
  ``.jaxbp-tmp-<pid>-<random>.npz`` with a ``<pid>`` that is not running on this machine (or is this process,
  and the file is not being written now), or jaxbp's former ``.tmp-<8 characters>.npz``; and its content is
  empty or begins with the zip entry ``leaf_<n>.npy`` or ``__meta__.npy``, as ``np.savez`` begins a checkpoint.
  Errors (a read-only folder, a file vanishing meanwhile) are ignored: sweeping is best effort.
  """
  removed: list[str] = []
  try:
    names = os.listdir(directory)
  except OSError:
    return removed
  for name in names:
    full = os.path.join(directory, name)
    if _is_stale_tmp(name, full) and _looks_like_partial_checkpoint(full):
      with contextlib.suppress(OSError):
        os.remove(full)
        removed.append(name)
  return removed


def _is_stale_tmp(name, full):
  if _LEGACY_TMP_NAME.fullmatch(name):
    return True
  match = _TMP_NAME.fullmatch(name)
  if match is None:
    return False
  pid = int(match.group(1))
  if pid == os.getpid():
    return full not in _IN_FLIGHT
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return True
  except (OSError, OverflowError):
    pass  # another user's process, or a pid we cannot ask about: assume it is writing
  return False


_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_FIRST_ENTRY = re.compile(rb"(leaf_\d+|__meta__)\.npy")


def _looks_like_partial_checkpoint(full):
  try:
    if not os.path.isfile(full) or os.path.islink(full):
      return False
    with open(full, "rb") as f:
      head = f.read(30 + 64)
  except OSError:
    return False
  if not head:
    return True  # mkstemp created it, the write never started
  if len(head) < 30 or not head.startswith(_ZIP_LOCAL_HEADER):
    return False
  name_len = int.from_bytes(head[26:28], "little")
  return _FIRST_ENTRY.fullmatch(head[30:30 + name_len]) is not None


# --- reading ---------------------------------------------------------------------------------------------

def read(path: str) -> tuple[dict[str, Any], list[np.ndarray]]:
  """Reads a checkpoint without a template: ``(doc, arrays)``, the JSON document and the leaf arrays.

  Args:
    path: the checkpoint file.

  Raises:
    CheckpointError: the file is missing, truncated, corrupted or not a jaxbp checkpoint.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"checkpoint {path}: " + ("is a folder, not a file" if os.path.isdir(path)
                                                    else "no such file"))
  sweep(os.path.dirname(os.path.abspath(path)))
  try:
    with zipfile.ZipFile(path) as zf:
      if f"{META_KEY}.npy" not in zf.namelist():
        raise CheckpointError(f"checkpoint {path}: not a jaxbp checkpoint (no {META_KEY} entry)")
      meta_bytes = _read_array(zf, META_KEY)
      if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
        raise CheckpointError(f"checkpoint {path}: {META_KEY} is {meta_bytes.dtype} {meta_bytes.shape},"
                              " expected the uint8 bytes of a JSON document")
      doc = json.loads(meta_bytes.tobytes().decode("utf-8"))
      check_doc(path, doc)
      arrays = [_read_array(zf, f"leaf_{i}") for i in range(len(doc["paths"]))]
  except CheckpointError:
    raise
  except Exception as e:  # zip, zlib, npy-header and JSON errors of every kind; none may escape as a traceback
    reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({reason});"
                          " delete it or restore a copy") from None
  return doc, arrays


def _read_array(zf, name):
  """One ``.npy`` entry, read whole first so that its CRC-32 is verified before NumPy parses its header."""
  raw = zf.read(f"{name}.npy")
  return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def load(path: str, template: Any) -> tuple[Any, dict[str, Any]]:
  """Restores a pytree saved by :func:`save` into the structure of ``template``.

  Args:
    path: the checkpoint file.
    template: a pytree with the same structure, shapes and dtypes (its values are ignored; a
      ``jax.eval_shape`` result will do).

  Returns:
    ``(tree, meta)``: the restored pytree (leaves as ``jax.Array``, keys re-wrapped) and the metadata.

  Raises:
    CheckpointError: unreadable file, or a structure, shape or dtype that does not match ``template``.
  """
  doc, arrays = read(path)
  return restore(path, doc, arrays, template), doc["meta"]


def restore(path: str, doc: dict[str, Any], arrays: list[np.ndarray], template: Any) -> Any:
  """The pytree of ``(doc, arrays)`` from :func:`read` in the structure of ``template`` (see :func:`load`),
  for a caller that read the file once to decide the template; ``path`` names the file in errors."""
  import jax  # pylint: disable=import-outside-toplevel
  paths, leaves, treedef = _flatten(template)
  if paths != doc["paths"]:
    extra = sorted(set(doc["paths"]) - set(paths))[:3]
    missing = sorted(set(paths) - set(doc["paths"]))[:3]
    raise CheckpointError(f"checkpoint {path} was written for a different model or optimiser"
                          f" (in the file only: {extra or '-'}; expected but absent: {missing or '-'})")
  restored = [_restore_leaf(path, p, want, got, doc["keys"].get(str(i)))
              for i, (p, want, got) in enumerate(zip(paths, leaves, arrays))]
  return jax.tree_util.tree_unflatten(treedef, restored)


def restore_fields(path: str, doc: dict[str, Any], arrays: list[np.ndarray], template: Any,
                   fields: Sequence[str]) -> Any:
  """Only the ``fields`` of the NamedTuple ``template`` from ``(doc, arrays)``, the other fields as in
  ``template``: the file may hold more (another run's optimiser state), but under those fields it must hold
  exactly the template's leaves, with their shapes and dtypes (:class:`CheckpointError` naming the first
  that differs)."""
  part = template._replace(**{f: None for f in template._fields if f not in fields})
  paths = _flatten(part)[0]
  ours = tuple(f".{f}" for f in fields)
  under = [p for p in doc["paths"] if p in ours or p.startswith(tuple(f"{o}[" for o in ours))]
  if sorted(under) != sorted(paths):
    extra, missing = sorted(set(under) - set(paths))[:3], sorted(set(paths) - set(under))[:3]
    raise CheckpointError(f"checkpoint {path} holds another model's {' and '.join(fields)}"
                          f" (in the file only: {extra or '-'}; expected but absent: {missing or '-'})")
  index = {p: i for i, p in enumerate(doc["paths"])}
  picked = [index[p] for p in paths]
  keys = {str(j): doc["keys"][str(i)] for j, i in enumerate(picked) if str(i) in doc["keys"]}
  restored = restore(path, {**doc, "paths": paths, "keys": keys}, [arrays[i] for i in picked], part)
  return template._replace(**{f: getattr(restored, f) for f in fields})


def _restore_leaf(path, p, want, got, key_impl):
  import jax  # pylint: disable=import-outside-toplevel
  if (key_impl is not None) != _is_key(want):
    saved = "a PRNG key" if key_impl is not None else "an array"
    raise CheckpointError(f"checkpoint {path}: {p} was saved as {saved}, the model's is not")
  if key_impl is not None:
    try:
      key = jax.random.wrap_key_data(got, impl=key_impl)
    except Exception as e:  # an unknown impl name, or key data of the wrong shape or dtype
      raise CheckpointError(f"checkpoint {path}: {p} is not a {key_impl!r} PRNG key ({type(e).__name__})") from None
    if key.shape != tuple(want.shape) or key.dtype != want.dtype:
      raise CheckpointError(f"checkpoint {path}: {p} is a key {key.shape} {key.dtype},"
                            f" the model expects {tuple(want.shape)} {want.dtype}")
    return key
  want_shape = np.shape(want)
  want_dtype = want.dtype if hasattr(want, "dtype") else np.asarray(want).dtype
  if got.dtype.kind == "V" and got.dtype.itemsize == np.dtype(want_dtype).itemsize:
    got = got.view(want_dtype)  # NumPy writes ml_dtypes (bfloat16, ...) as raw void bytes
  if got.shape != tuple(want_shape) or got.dtype != want_dtype:
    raise CheckpointError(f"checkpoint {path}: {p} has shape {got.shape} {got.dtype},"
                          f" the model expects {tuple(want_shape)} {want_dtype}")
  return jax.numpy.asarray(got)
