"""The bfloat16 precision contract: a rule's gradient in bfloat16 against the float64 truth, beside autodiff's.

For inputs ``x`` of bfloat16 (drawn in float32, then cast) and a cotangent ``u`` of bfloat16, the truth is
``jax.vjp`` of the rule's reference on the same values upcast to float64 (the rounding of the inputs is
not an error of the rule: both sides see the same bfloat16 numbers). For each differentiable input the
error of a cotangent ``d`` is measured relative to the truth's scale ``max|t|``:

    max = max|d − t| / max|t|,    rms = sqrt(mean((d − t)²)) / max|t|

for the rule's own VJP in bfloat16 and for ``jax.vjp`` of the reference run in bfloat16 ("autodiff").
The contract (``jaxbp.ops.bf16_bound``): the rule's ``max`` is within its bound, and no larger than
autodiff's. ``HARD_CASES`` adds, per rule, the inputs where bfloat16 arithmetic loses most (a saturated
softmax, scores of 30 and more, rows of mean square 1e4, large activations); ``benchmarks/precision.py``
prints the table. ``check_vjp`` and ``check_jvp`` hold a rule to the same bound on bfloat16 and float16 inputs
(``jaxbp.check._truth``).
"""

from collections.abc import Callable, Iterator
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.check.hard_cases import HARD_CASES

__all__ = ["HARD_CASES", "GradError", "Measured", "gradient_errors", "measure_rule", "relative_error",
           "within_contract"]


class GradError(NamedTuple):
  """The error of one input's cotangent, relative to the float64 truth's largest entry."""
  input: str           # the reference's parameter name, with the leaf's path for a pytree argument
  rule_max: float      # max|d − t| / max|t| of the rule's VJP in bfloat16
  rule_rms: float      # RMS of d − t over max|t|
  autodiff_max: float  # the same of jax.vjp of the reference run in bfloat16
  autodiff_rms: float


class Measured(NamedTuple):
  """One case of one rule: the registry's branch or the hard case it was drawn from, and its errors."""
  rule: str
  case: str
  errors: tuple  # of GradError


def _is_float(leaf: Any) -> bool:
  return hasattr(leaf, "dtype") and hasattr(leaf, "shape") and jnp.issubdtype(leaf.dtype, jnp.floating)


def _labels(fn: Callable, args: tuple) -> list[str]:
  """Each float leaf's name: ``fn``'s parameter name, plus the leaf's path inside a pytree argument."""
  try:
    names = list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    names = []
  labels = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
    if _is_float(leaf):
      i = path[0].idx
      head = names[i] if i < len(names) else f"args[{i}]"
      labels.append(head + jax.tree_util.keystr(path[1:]))
  return labels


def _bind(f: Callable, args: tuple, kwargs: dict) -> Callable:
  """``f`` as a function of the float leaves of ``args`` alone; the other leaves and ``kwargs`` are fixed."""
  leaves, tree = jax.tree.flatten(args)
  where = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]

  def call(*floats):
    full = list(leaves)
    for i, x in zip(where, floats):
      full[i] = x
    return f(*jax.tree.unflatten(tree, full), **kwargs)
  return call


def _three_vjps(fn: Callable, reference: Callable, args: tuple, kwargs: dict) -> Callable:
  """One jitted program (traced with x64 on): ``(float leaves, u) -> (rule's VJP, autodiff's VJP, the truth)``,
  the truth being the reference's VJP on the float leaves and ``u`` upcast to float64."""
  rule, ref = _bind(fn, args, kwargs), _bind(reference, args, kwargs)

  def f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)

  @jax.jit
  def program(floats, u):
    return (jax.vjp(rule, *floats)[1](u), jax.vjp(ref, *floats)[1](u), jax.vjp(ref, *f64(floats))[1](f64(u)))
  return program


def relative_error(d: Any, t: np.ndarray) -> tuple[float, float]:
  """``(max, rms)`` of ``d − t`` relative to ``max|t|`` (absolute for a zero truth); inf where not finite."""
  d = np.asarray(jnp.asarray(d, jnp.float32), np.float64)
  if not t.size:
    return 0.0, 0.0
  diff = np.abs(d - t)
  if not np.all(np.isfinite(diff)):
    return np.inf, np.inf
  scale = float(np.max(np.abs(t)))
  scale = scale if scale > 0 else 1.0  # a zero truth: the error is absolute
  return float(diff.max()) / scale, float(np.sqrt(np.mean(diff**2))) / scale


def gradient_errors(fn: Callable, reference: Callable, args: tuple, kwargs: dict | None = None, *,
                    dtype: Any = jnp.bfloat16, seed: int = 0) -> tuple[GradError, ...]:
  """Casts the float leaves of ``args`` to ``dtype`` and measures each input's cotangent error (see module).

  ``args`` are the rule's positional arguments (float leaves of any float dtype; integer leaves, keys
  and Python values pass unchanged), ``kwargs`` its keywords. The cotangent is standard normal, drawn
  in float32 from ``seed`` and rounded to ``dtype``; the truth is computed in float64 (x64 switched on
  for it and restored).
  """
  kwargs = kwargs or {}
  args = jax.tree.map(lambda a: jnp.asarray(a, dtype) if _is_float(a) else a, args)
  floats = [a for a in jax.tree.leaves(args) if _is_float(a)]
  if not floats:
    raise ValueError(f"gradient_errors: {getattr(fn, '__name__', fn)} has no floating-point input")
  out = jax.eval_shape(_bind(reference, args, kwargs), *floats)
  rng = np.random.default_rng(seed)
  u = jax.tree.map(lambda o: jnp.asarray(rng.standard_normal(o.shape, np.float32), dtype), out)
  with jax.enable_x64(True):
    rule, auto, truth = _three_vjps(fn, reference, args, kwargs)(floats, u)
    truth = [np.asarray(t, np.float64) for t in truth]
  return tuple(GradError(label, *relative_error(r, t), *relative_error(a, t))
               for label, r, a, t in zip(_labels(fn, args), rule, auto, truth))


def _cases(name: str, rule: ops.Rule, branches: bool) -> Iterator[tuple[str, Callable]]:
  """The rule's branches (or its ``sample``) drawn in float32 (cast later), then its hard cases, by name."""
  samplers = (rule.branches or {"sample": rule.sample}) if branches else {"sample": rule.sample}
  for case, sample in samplers.items():
    yield case, lambda rng, s=sample: s(rng, np.float32)
  yield from HARD_CASES.get(name, {}).items()


def _draw(sample: Callable, seed: int) -> tuple[tuple, dict] | None:
  """The first draw from ``seed`` with no empty array and a float leaf (a zero-size draw has no error)."""
  rng = np.random.default_rng(seed)
  for _ in range(50):
    args, kwargs = sample(rng)
    leaves = jax.tree.leaves(args)
    if all(np.size(a) for a in leaves if hasattr(a, "shape")) and any(_is_float(a) for a in leaves):
      return args, kwargs
  return None


def measure_rule(name: str, seeds: tuple[int, ...] = (0,), *, branches: bool = True,
                 dtype: Any = jnp.bfloat16) -> list[Measured]:
  """``ops.REGISTRY[name]`` measured at each seed on every branch (or, ``branches=False``, on draws of its
  ``sample``) and on its ``HARD_CASES``; [] for a rule with no float input.

  A branch whose draws are all empty (a zero-size branch) is left out: it has no error to measure.
  """
  rule, found = ops.REGISTRY[name], []
  for case, sample in _cases(name, rule, branches):
    for seed in seeds:
      drawn = _draw(sample, seed)
      if drawn is not None:
        errors = gradient_errors(rule.fn, rule.reference, drawn[0], drawn[1], dtype=dtype, seed=seed)
        found.append(Measured(name, case, errors))
  return found


def within_contract(name: str, error: GradError, slack: float = 0.0) -> str:
  """'' when ``error`` keeps ``name``'s bound and autodiff's error (times 1 + ``slack``), else why not."""
  bound = ops.bf16_bound(name)
  why = []
  if not error.rule_max <= bound:
    why.append(f"max error {error.rule_max:.3g} > the bound {bound:.3g}")
  if not error.rule_max <= error.autodiff_max * (1 + slack):
    why.append(f"max error {error.rule_max:.3g} > autodiff's {error.autodiff_max:.3g}")
  return "; ".join(why)
