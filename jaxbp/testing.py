"""``jaxbp.testing``: what a user's own test suite calls to prove their rules.

* ``assert_vjp(fn, reference, *args, **options)``: ``check_vjp`` with its default checks (the classic
  ones, linearity, cotangent types, determinism, the residual audit) and the self-test; raises
  ``AssertionError`` whose message is the report, which pytest prints as it is.
* ``shapes()``, ``arrays(shape)``, ``kinked(shape, at)``: hypothesis strategies for shapes, for values
  away from a non-smooth point and for values exactly at it (hypothesis is imported when called).
* ``parametrize_rules(cases)``: a list of ``(rule, reference, sampler)`` becomes one pytest test per
  rule and dtype: ``test_my_rules = parametrize_rules([...])`` in a test module is the whole test.

A sampler is ``sampler(rng: np.random.Generator, dtype) -> (args, kwargs)``, as in ``jaxbp.ops.REGISTRY``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxbp.check import DEFAULT_CHECKS
from jaxbp.check import Report
from jaxbp.check import check_vjp
from jaxbp.ops.sampling import uniform

USER_CHECKS = DEFAULT_CHECKS  # check_vjp's own default since issue 19


def assert_vjp(fn: Callable, reference: Callable, *args: Any, checks: Sequence[str] = USER_CHECKS,
               **options: Any) -> Report:
  """``check_vjp`` with ``USER_CHECKS`` and the self-test; returns the report, raises with it."""
  __tracebackhide__ = True  # pylint: disable=unused-variable  # pytest shows the report, not this frame
  return check_vjp(fn, reference, *args, checks=tuple(checks), **options)


def shapes(max_rank: int = 3, max_dim: int = 5, min_rank: int = 0) -> Any:
  """A hypothesis strategy for array shapes: rank ``min_rank..max_rank``, each dimension 1..max_dim."""
  import hypothesis.strategies as st  # pylint: disable=import-outside-toplevel
  return st.lists(st.integers(1, max_dim), min_size=min_rank, max_size=max_rank).map(tuple)


def arrays(shape: Any, dtype: Any = np.float32, low: float = -2.0, high: float = 2.0,
           away_from: float | None = None, gap: float = 0.1) -> Any:
  """Finite values in [low, high] of ``shape`` (a tuple or a strategy), none within ``gap`` of ``away_from``."""
  import hypothesis.strategies as st  # pylint: disable=import-outside-toplevel
  shape_st = shape if hasattr(shape, "example") else st.just(tuple(shape))

  def draw(s):
    seeds = st.integers(0, 2**32 - 1)
    return seeds.map(lambda seed: uniform(np.random.default_rng(seed), s, dtype, low, high, away_from, gap))
  return shape_st.flatmap(draw)


def kinked(shape: Any, at: float = 0.0, dtype: Any = np.float32, low: float = -2.0,
           high: float = 2.0) -> Any:
  """Values of ``shape`` with at least one element exactly at the kink ``at`` (test the documented choice)."""
  import hypothesis.strategies as st  # pylint: disable=import-outside-toplevel

  def put(x, i):
    x = np.array(x)
    x.flat[i % max(x.size, 1)] = at
    return x
  return st.tuples(arrays(shape, dtype, low, high), st.integers(0, 1 << 16)).map(lambda p: put(*p))


def parametrize_rules(cases: Sequence[tuple], dtypes: Sequence[Any] = (np.float32, np.float64),
                      seeds: Sequence[int] = (0,), **options: Any) -> Callable:
  """One pytest test per (rule, dtype, seed): ``test_rules = parametrize_rules([(fn, ref, sampler)])``.

  Each test draws ``args, kwargs = sampler(np.random.default_rng(seed), dtype)`` and calls
  ``assert_vjp`` on them (float64 with x64 on); the test ids are the rules' names.
  """
  import pytest  # pylint: disable=import-outside-toplevel
  for i, case in enumerate(cases):
    if len(case) != 3 or not all(callable(c) for c in case):
      raise TypeError(f"parametrize_rules: case {i} must be (rule, reference, sampler), three callables")
  params = [pytest.param(fn, ref, sample, dtype, seed,
                         id=f"{getattr(fn, '__name__', i)}-{np.dtype(dtype).name}-{seed}")
            for i, (fn, ref, sample) in enumerate(cases) for dtype in dtypes for seed in seeds]

  @pytest.mark.parametrize("rule, reference, sampler, dtype, seed", params)
  def test_rule(rule, reference, sampler, dtype, seed):
    args, kwargs = sampler(np.random.default_rng(seed), dtype)
    with jax.enable_x64(np.dtype(dtype) == np.float64):
      assert_vjp(rule, reference, *args, kwargs=kwargs, seed=seed, **options)
  return test_rule
