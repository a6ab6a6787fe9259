"""The checks of a checkpoint's JSON document and of a training run's metadata, field by field.

Split from :mod:`jaxbp.train.checkpoint`, which re-exports every public name here; nothing in this module reads a
file. Each check raises :class:`CheckpointError` naming the file and the first field that is wrong.
"""

import json
import types
import typing
from typing import Any

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


def _show(v):
  """``a string '0.1'``: a JSON value's type and (the start of) its text, for messages."""
  return _json_type(v) if v is _MISSING else f"{_json_type(v)} {json.dumps(v)[:40]}"


# --- a training run's metadata ---------------------------------------------------------------------------

RECORD_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")


def check_run_meta(path: str, meta: Any, config_type: type) -> None:
  """Checks a training run's metadata before anything reads it.

  The layout ``jaxbp.train`` writes: ``config`` (an object with ``config_type``'s fields, each of its
  annotated type: ``float`` accepts integers, ``bool`` accepts only booleans, ``X | None`` also null, a
  ``tuple`` a list of scalars; fields with defaults may be absent, unknown ones are refused); ``epoch``
  (the number of finished epochs, an integer equal to the length of ``history``); ``history`` (one object
  per finished epoch, in order: ``epoch`` is its 1-based number, and ``RECORD_FIELDS`` are numbers, other
  entries numbers or lists of numbers); and optionally ``data`` (an object of strings or nulls).

  Raises:
    CheckpointError: naming ``path`` and the first field that is wrong.
  """
  def fail(what):
    raise CheckpointError(f"checkpoint {path}: {what}")
  if not isinstance(meta, dict):
    fail(f"'meta' is {_json_type(meta)}, expected an object")
  if "config" not in meta:
    fail("no 'config' in its metadata; it was not written by jaxbp train")
  _check_fields(meta["config"], config_type, fail)
  history, epoch = meta.get("history", _MISSING), meta.get("epoch", _MISSING)
  if not isinstance(history, list):
    fail(f"'history' is {_json_type(history)}, expected a list")
  if not _is_int(epoch) or epoch != len(history):
    fail(f"'epoch' is {_show(epoch)}, expected the number of records in 'history' ({len(history)})")
  for i, record in enumerate(history):
    if not isinstance(record, dict) or record.get("epoch") != i + 1 or not _is_int(record["epoch"]):
      fail(f"history[{i}] is not the record of epoch {i + 1}")
    for k, v in record.items():
      if not (_is_number(v) or (k not in RECORD_FIELDS and isinstance(v, list) and all(map(_is_number, v)))):
        fail(f"history[{i}][{k!r}] is {_json_type(v)}, expected a number")
    if any(k not in record for k in RECORD_FIELDS):
      fail(f"history[{i}] lacks {', '.join(k for k in RECORD_FIELDS if k not in record)}")
  data = meta.get("data", {})
  if not isinstance(data, dict) or not all(isinstance(v, str | None) for v in data.values()):
    fail(f"'data' is {_json_type(data)}, expected an object of strings")


def _check_fields(config, config_type, fail):
  if not isinstance(config, dict):
    fail(f"'config' is {_json_type(config)}, expected an object")
  hints = typing.get_type_hints(config_type)
  unknown = sorted(set(config) - set(hints))
  if unknown:
    fail(f"config has unknown field(s) {', '.join(unknown)}")
  defaults = getattr(config_type, "_field_defaults", {})
  for field, annotation in hints.items():
    if field not in config:
      if field not in defaults:
        fail(f"config lacks the field {field!r}")
      continue
    if not _has_type(config[field], annotation):
      fail(f"config field {field!r} is {_show(config[field])}, expected {_describe(annotation)}")


def _is_int(v):
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
  return isinstance(v, int | float) and not isinstance(v, bool)


def _has_type(v, annotation):
  """Whether the JSON value ``v`` can stand for a field annotated ``annotation``."""
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    return any(_has_type(v, a) for a in args)
  if annotation is type(None) or annotation is None:
    return v is None
  simple = {bool: lambda: isinstance(v, bool), int: lambda: _is_int(v), float: lambda: _is_number(v),
            str: lambda: isinstance(v, str), dict: lambda: isinstance(v, dict)}
  if annotation in simple:
    return simple[annotation]()
  if annotation in (tuple, list) or origin in (tuple, list):
    if not isinstance(v, list):
      return False
    item = args[0] if args and (origin is list or args[-1] is Ellipsis) else None
    return all(_has_type(x, item) if item is not None else isinstance(x, str | int | float | bool) for x in v)
  return True  # Any, or an annotation this check does not model: the config's own checks decide


def _describe(annotation):
  args = typing.get_args(annotation)
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    return " or ".join(_describe(a) for a in args)
  return _TYPE_NAMES.get(annotation, str(annotation))
