"""The registry of rules: every custom_vjp op with its plain-jnp reference and a way to draw inputs.

The tests iterate over ``REGISTRY``, so a rule that is registered cannot escape a check, and a rule
that is not registered does not exist for the tests. Register every rule.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Rule(NamedTuple):
  """One registered rule.

  Attributes:
    name: the public name in ``jaxbp.ops``.
    fn: the op itself; its gradient is the hand-written rule.
    reference: the same function in plain ``jnp``, with the same signature, that JAX differentiates
      on its own.
    sample: ``sample(rng: np.random.Generator, dtype) -> (args, kwargs)`` draws valid inputs of random
      shapes and values, away from non-differentiable points (the kinks are tested separately).
    second_order: whether the backward is itself differentiable, so ``grad`` of ``grad`` is checked.
    note: which of the notes in ``seeds/`` the rule comes from.
  """
  name: str
  fn: Callable[..., Any]
  reference: Callable[..., Any]
  sample: Callable[[np.random.Generator, Any], tuple]
  second_order: bool = True
  note: str = ""


REGISTRY: dict[str, Rule] = {}


def register(fn, reference, sample, *, second_order=True, note=""):
  """Adds ``fn`` to ``REGISTRY`` under its ``__name__``; returns ``fn`` unchanged."""
  name = fn.__name__
  if name in REGISTRY:
    raise ValueError(f"rule {name!r} is registered twice")
  REGISTRY[name] = Rule(name, fn, reference, sample, second_order, note)
  return fn


class _References:
  """``jaxbp.ops.reference``: every rule's plain-jnp reference under the rule's own name.

  A model written against ``ops`` runs on the manual rules with ``ops=jaxbp.ops`` and on JAX's own
  autodiff with ``ops=jaxbp.ops.reference``: the same code, two sources of gradients.
  """

  def __getattr__(self, name):
    try:
      return REGISTRY[name].reference
    except KeyError:
      raise AttributeError(f"no rule named {name!r} in jaxbp.ops.REGISTRY") from None

  def __dir__(self):
    return sorted(REGISTRY)


reference = _References()


def draw(rng: np.random.Generator, shape, dtype, low=-2.0, high=2.0, away_from=None, gap=0.1):
  """Uniform values in [low, high) of ``dtype``; with ``away_from``, none within ``gap`` of that point."""
  x = rng.uniform(low, high, size=shape)
  if away_from is not None:
    near = np.abs(x - away_from) < gap
    x = np.where(near, away_from + np.sign(x - away_from + 1e-12) * (gap + rng.uniform(0, 1, size=shape)), x)
  return np.asarray(x, dtype=dtype)


def random_shape(rng, max_rank=3, max_dim=5):
  """A random shape of rank 0..max_rank with dimensions 1..max_dim, for the registry's samplers."""
  return tuple(int(n) for n in rng.integers(1, max_dim + 1, size=rng.integers(0, max_rank + 1)))


def broadcastable_to(rng, shape):
  """A random shape that broadcasts to ``shape``: a suffix of it, with some dimensions set to 1."""
  suffix = shape[rng.integers(0, len(shape) + 1):]
  return tuple(1 if rng.random() < 0.3 else n for n in suffix)
