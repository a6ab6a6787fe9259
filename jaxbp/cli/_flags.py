"""Flags made from config ``NamedTuple`` fields, for ``jaxbp train``.

Every field of :class:`jaxbp.train.TrainConfig` and of every registered model family's config is a flag
``--field-name`` whose type comes from the field's annotation. Generic rather than one hand-written flag
group per family: a new family gets its flags, their help and their checks by registering, never by editing
the command; and every flag has default ``SUPPRESS``, so ``args`` holds exactly the flags the user typed
(what ``--resume`` must know: a flag typed at its default value is still typed).
"""

import argparse
from typing import Any

from jaxbp import models


def flag(field: str) -> str:
  """``--batch-size`` for the field ``batch_size``."""
  return "--" + field.replace("_", "-")


def _int_list(text: str) -> tuple[int, ...]:
  try:
    widths = tuple(int(w) for w in text.split(",") if w.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers like 256,256, got {text!r}") from None
  if any(w < 1 for w in widths):
    raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
  return widths


def show(v: Any) -> str:
  return ",".join(str(w) for w in v) if isinstance(v, tuple) else str(v)


def add_field(group: Any, field: str, tp: Any, help_text: str, *, choices: Any = None,
              metavar: str | None = None) -> None:
  """Adds the flag of one config field to ``group``, default ``SUPPRESS``."""
  kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
  if tp is bool:
    kwargs["action"] = argparse.BooleanOptionalAction
  elif tp == tuple[int, ...]:
    kwargs.update(type=_int_list, metavar=metavar or "N1,N2,...")
  else:
    kwargs.update(type=int if tp is int else str if tp is str else float, choices=choices)
    if metavar:
      kwargs["metavar"] = metavar
  group.add_argument(flag(field), dest=field, **kwargs)


def add_model_flags(group: Any, reserved: set[str]) -> list[str]:
  """Adds one flag per field of every registered family's config (a field several families share is one
  flag); returns the fields. ValueError if a field would shadow one of ``reserved`` (the command's own)."""
  fields: dict[str, list[models.Family]] = {}
  for name in models.names():
    family = models.get(name)
    for field in family.config._fields:
      fields.setdefault(field, []).append(family)
  for field, families in fields.items():
    if field in reserved:
      raise ValueError(f"model family {families[0].name!r}: field {field!r} would shadow the flag {flag(field)}")
    tp = models.field_types(families[0].config)[field]
    choices = [c for f in families for c in f.choices.get(field, ()) if c]
    text = next((f.help[field] for f in families if field in f.help), field.replace("_", " "))
    defaults = "; ".join(f"{f.name}: {show(f.config._field_defaults[field])}" for f in families)
    add_field(group, field, tp, f"{text} [{defaults}]", choices=list(dict.fromkeys(choices)) or None)
  return list(fields)


def model_from_args(args: argparse.Namespace, name: str, model_fields: list[str]) -> Any:
  """The config of family ``name`` from the typed flags; ValueError naming a flag the family does not have."""
  family = models.get(name)
  typed = [f for f in model_fields if hasattr(args, f)]
  foreign = [f for f in typed if f not in family.config._fields]
  if foreign:
    own = ", ".join(flag(f) for f in family.config._fields) or "none"
    raise ValueError(f"{flag(foreign[0])} does not apply to --model {name} (its flags: {own})")
  return family.config(**{f: getattr(args, f) for f in typed})
