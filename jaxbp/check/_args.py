"""The ``args`` pytrees split into differentiable leaves and pass-through leaves, and their labels."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np


class Args:
  """The ``args`` pytrees split into differentiable leaves (floating arrays) and pass-through leaves."""

  def __init__(self, fn, args, kwargs, argnums):
    flat, self.treedef = jax.tree_util.tree_flatten_with_path(args)
    paths, self.leaves, self.kwargs = [p for p, _ in flat], [x for _, x in flat], kwargs
    self.diff = [i for i, (p, x) in enumerate(zip(paths, self.leaves)) if is_float_array(x)
                 and (argnums is None or p[0].idx in argnums)]
    self.arrays = [i for i, x in enumerate(self.leaves) if hasattr(x, "dtype") and hasattr(x, "shape")
                   and (argnums is None or paths[i][0].idx in argnums)]
    params = _positional_names(fn)
    self.labels = [_label(p, params) for p in paths]

  def bind(self, f, leaves=None, which=None):
    """``f`` as a function of the differentiable leaves only (or of the leaves ``which``); the others fixed."""
    base = list(self.leaves if leaves is None else leaves)
    which = self.diff if which is None else which

    def bound(*diff):
      full = list(base)
      for i, x in zip(which, diff):
        full[i] = x
      return f(*jax.tree.unflatten(self.treedef, full), **self.kwargs)
    return bound

  def jvp_of(self, f, x, k, vk, leaves=None):
    """J·v of ``f`` (bound as ``bind`` does) with the tangent ``vk`` on differentiable input k alone.

    The other inputs are held fixed rather than given zero tangents, so no zero arrays exist: made inside
    a compiled program, XLA:CPU (jax 0.10.2) computed with them as garbage (J·v = −1.5e22 or NaN for
    linear_softmax_cross_entropy's W [256, 32768], where eager gave 0.0175).
    """
    x, bound = tuple(x), self.bind(f, leaves)
    return jax.jvp(lambda xk: bound(*x[:k], xk, *x[k + 1:]), (x[k],), (vk,))[1]

  def x(self):
    return [jnp.asarray(self.leaves[i]) for i in self.diff]


def is_float_array(x):
  if not hasattr(x, "dtype") or not hasattr(x, "shape") or not jnp.issubdtype(x.dtype, jnp.inexact):
    return False
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"check_vjp: complex inputs are not supported (got dtype {x.dtype})")
  return True


def _positional_names(fn):
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return []
  return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _label(path, params):
  where = "args" + jax.tree_util.keystr(path)
  idx = path[0].idx
  return f"input '{params[idx]}' ({where})" if idx < len(params) else f"input {where}"


_BWD_TYPE_ERROR = re.compile(  # jax.custom_vjp's message for a cotangent of the wrong shape or dtype
    r"at output(\S*) the bwd rule produced .* corresponding to an input of type (\w+\[[\d,]*\])")


def blame(exc, fn, spec):
  """Which input an exception from the backward concerns, where JAX's message says so."""
  m = _BWD_TYPE_ERROR.search(str(exc))
  if not m:
    return "the rule"
  path, aval = m.groups()
  avals = {i: f"{np.dtype(spec.leaves[i].dtype).name}[{','.join(map(str, np.shape(spec.leaves[i])))}]"
           for i in range(len(spec.leaves)) if hasattr(spec.leaves[i], "dtype")}
  if isinstance(fn, jax.custom_vjp):
    exact = [i for i in avals if spec.labels[i].endswith("(args" + path + ")") or
             spec.labels[i] == "input args" + path]
    if len(exact) == 1:
      return spec.labels[exact[0]]
  same = [i for i, a in avals.items() if a.split("[")[1:] == aval.split("[")[1:]]
  return spec.labels[same[0]] if len(same) == 1 else f"an input of type {aval} (bwd output{path})"
