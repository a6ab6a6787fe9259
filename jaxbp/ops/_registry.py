"""The registry of rules: every custom_vjp op with its plain-jnp reference and the samplers of its inputs.

The tests iterate over ``REGISTRY``, so a rule that is registered cannot escape a check, and a rule
that is not registered does not exist for the tests. Register every rule.

A rule's ``sample`` draws random inputs; its ``branches`` name every code path of the rule (each
reduction, each label kind, rank ≥ 3, a batch of one, each broadcast form, zero-size axes) with a
sampler that always reaches that path, so the registry test proves every branch, not only the one a
random draw happened to hit.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import ml_dtypes
import numpy as np

Sampler = Callable[[np.random.Generator, Any], tuple[tuple, dict]]


class Rule(NamedTuple):
  """One registered rule.

  Attributes:
    name: the public name in ``jaxbp.ops``.
    fn: the op itself; its gradient is the hand-written rule.
    reference: the same function in plain ``jnp``, with the same signature, that JAX differentiates
      on its own.
    sample: ``sample(rng: np.random.Generator, dtype) -> (args, kwargs)`` draws valid inputs of random
      shapes and values, away from non-differentiable points (the kinks are tested separately).
    branches: branch name → a sampler of the same signature whose every draw reaches that branch.
    note: which of the notes in ``/work/shared/seeds/`` (001 …) the rule comes from.

  Every rule's backward is written in differentiable jnp, so the tests also check second order.
  """
  name: str
  fn: Callable[..., Any]
  reference: Callable[..., Any]
  sample: Sampler
  branches: Mapping[str, Sampler] = {}
  note: str = ""


REGISTRY: dict[str, Rule] = {}


def register(fn: Callable[..., Any], reference: Callable[..., Any], sample: Sampler, *,
             branches: Mapping[str, Sampler] | None = None, note: str = "") -> Callable[..., Any]:
  """Adds ``fn`` to ``REGISTRY`` under its ``__name__``; returns ``fn`` unchanged."""
  name = fn.__name__
  if name in REGISTRY:
    raise ValueError(f"rule {name!r} is registered twice")
  REGISTRY[name] = Rule(name, fn, reference, sample, dict(branches or {}), note)
  return fn


def any_branch(branches: Mapping[str, Sampler]) -> Sampler:
  """A sampler that draws from one of ``branches``, chosen at random: a rule's ``sample`` from its branches."""
  samplers = list(branches.values())

  def sample(rng: np.random.Generator, dtype: Any) -> tuple[tuple, dict]:
    return samplers[int(rng.integers(len(samplers)))](rng, dtype)
  return sample


_LOWER = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.float32): np.dtype(ml_dtypes.bfloat16)}


def mixed_dtypes(branches: Mapping[str, Sampler], base: str | None = None, arg: int = 0) -> dict[str, Sampler]:
  """``branches`` and one more: the branch ``base`` (default: the first) with the floating leaves of
  positional argument ``arg`` one precision below the others (float64 → float32, float32 → bfloat16),
  for a rule with several float inputs: each gradient must keep its own input's dtype."""
  base = next(iter(branches)) if base is None else base
  draw = branches[base]

  def sample(rng: np.random.Generator, dtype: Any) -> tuple[tuple, dict]:
    args, kwargs = draw(rng, dtype)
    lower = _LOWER.get(np.dtype(dtype), np.dtype(dtype))
    low = lambda a: np.asarray(a).astype(lower) if np.issubdtype(np.asarray(a).dtype, np.floating) else a
    return args[:arg] + (jax.tree.map(low, args[arg]),) + args[arg + 1:], kwargs
  return {**branches, f"args[{arg}] one precision lower (mixed dtypes), {base}": sample}


class _References:
  """``jaxbp.ops.reference``: every rule's plain-jnp reference under the rule's own name.

  A model written against ``ops`` runs on the manual rules with ``ops=jaxbp.ops`` and on JAX's own
  autodiff with ``ops=jaxbp.ops.reference``: the same code, two sources of gradients.
  """

  def __getattr__(self, name: str) -> Callable[..., Any]:
    try:
      return REGISTRY[name].reference
    except KeyError:
      raise AttributeError(f"no rule named {name!r} in jaxbp.ops.REGISTRY") from None

  def __dir__(self) -> list[str]:
    return sorted(REGISTRY)


reference = _References()


def uniform(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, low: float = -2.0,
            high: float = 2.0, away_from: float | None = None, gap: float = 0.1) -> np.ndarray:
  """Uniform values in [low, high) of ``dtype``; with ``away_from``, none within ``gap`` of that point."""
  x = rng.uniform(low, high, size=shape)
  if away_from is not None:
    near = np.abs(x - away_from) < gap
    x = np.where(near, away_from + np.where(x >= away_from, 1, -1) * (gap + rng.uniform(0, 1, size=shape)), x)
  return np.asarray(x, dtype=dtype)


def random_shape(rng: np.random.Generator, max_rank: int = 3, max_dim: int = 5, min_rank: int = 0,
                 min_dim: int = 1) -> tuple[int, ...]:
  """A random shape of rank min_rank..max_rank with dimensions min_dim..max_dim, for the samplers."""
  rank = int(rng.integers(min_rank, max_rank + 1))
  return tuple(int(n) for n in rng.integers(min_dim, max_dim + 1, size=rank))


def zero_size(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
  """``shape`` with one of its axes (chosen at random) of length 0: an empty array of that rank."""
  axis = int(rng.integers(len(shape)))
  return shape[:axis] + (0,) + shape[axis + 1:]


def broadcastable_to(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
  """A random shape that broadcasts to ``shape``: a suffix of it, with some dimensions set to 1."""
  suffix = shape[rng.integers(0, len(shape) + 1):]
  return tuple(1 if rng.random() < 0.3 else n for n in suffix)
