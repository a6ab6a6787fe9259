"""Pooling (CS231n's pooling layers): max_pool2d routes, avg_pool2d distributes, over NHWC windows.

A pool is a gate applied per window: max pooling is note 001's max gate with many inputs (the whole
upstream gradient goes to the winner), average pooling is an add gate scaled by 1/(window area)
(every input of the window gets an equal share). Windows may overlap (stride < window); an input in
several windows sums what each of them sends it.
"""

from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops import _window
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_array


class _Pool(NamedTuple):
  """The static window arguments, explicit: pairs for (H, W), and ((lo, hi), (lo, hi)) pads."""
  window: tuple
  stride: tuple
  pads: tuple
  in_hw: tuple  # the input's (H, W): the backward of avg_pool2d needs nothing else


def _pool_geometry(op, x, window, stride, padding):
  """Checks the window arguments for x; returns them as an explicit _Pool."""
  xs = jnp.shape(x)
  if len(xs) != 4:
    raise ValueError(f"{op}: argument 'x' must be [N, H, W, C] (NHWC), got shape {xs}")
  window = _window.pair(op, "window", window)
  stride = window if stride is None else _window.pair(op, "stride", stride)
  pads = _window.explicit_padding(op, padding, xs[1:3], window, stride)
  if any(p >= k for k, pair in zip(window, pads) for p in pair):
    raise ValueError(f"{op}: argument 'padding' must be smaller than the window {window} on each side, "
                     f"so that every window holds an input pixel, got {pads}")
  _window.out_size(op, xs[1:3], window, stride, pads)
  return _Pool(window, stride, pads, tuple(xs[1:3]))


def _reduce(x, init, op, geo):
  return lax.reduce_window(x, init, op, (1, *geo.window, 1), (1, *geo.stride, 1),
                           ((0, 0), *geo.pads, (0, 0)))


def _window_views(shape, geo):
  """For each offset (kh, kw) of the window: the slice of the padded input that offset reads, as
  (start, limit, strides) for ``lax.slice``, and the ``lax.pad`` config that puts an output-shaped
  array back in its place in the padded input (zeros elsewhere)."""
  n, h, w, c = shape
  hp, wp = h + sum(geo.pads[0]), w + sum(geo.pads[1])
  (ho, wo) = ((hp - geo.window[0]) // geo.stride[0] + 1, (wp - geo.window[1]) // geo.stride[1] + 1)
  span = ((ho - 1) * geo.stride[0] + 1, (wo - 1) * geo.stride[1] + 1)
  for kh in range(geo.window[0]):
    for kw in range(geo.window[1]):
      view = ((0, kh, kw, 0), (n, kh + span[0], kw + span[1], c), (1, *geo.stride, 1))
      place = ((0, 0, 0), (kh, hp - kh - span[0], geo.stride[0] - 1),
               (kw, wp - kw - span[1], geo.stride[1] - 1), (0, 0, 0))
      yield view, place


def _unpad(xp, shape, geo):
  (lo_h, _), (lo_w, _) = geo.pads
  return lax.slice(xp, (0, lo_h, lo_w, 0), (shape[0], lo_h + shape[1], lo_w + shape[2], shape[3]))


# ---------------------------------------------------------------------------------------- max_pool2d

def max_pool2d(x: jax.typing.ArrayLike, window=2, stride=None, padding="VALID") -> jax.Array:
  """y[n, i, j, c] = max of the window at (i·s, j·s) of the (−∞-padded) x.  (Note 001's max gate; CS231n.)

  Max pooling is note 001's max gate with a window of inputs (CS231n's max_pool).

  Local Jacobian: ∂y[n,i,j,c]/∂x[n,p,q,c] = 1 if (p, q) is the window's winner, else 0. VJP:
  dx[p] = Σ over the windows whose winner is p of g[window]: the max gate routes the whole upstream
  gradient to the largest input, and an input that wins several overlapping windows sums them.

  Ties (non-smooth point): when several inputs of one window equal the maximum, the whole gradient
  goes to the FIRST of them in row-major order of the window (smallest row, then smallest column),
  routed whole, never split; the same choice as ``jax.grad`` of ``lax.reduce_window`` and PyTorch.
  A window whose maximum is NaN sends no gradient.

  Residuals: x and y. The backward walks the window offsets (kh, kw) in row-major order, compares
  each strided view of x with y and hands g to the first match, so it needs both; y is the op's
  output, alive anyway in a training step.

  Args:
    x: float array [N, H, W, C] (NHWC).
    window: int or (K_h, K_w) ≥ 1.
    stride: int or (s_h, s_w) ≥ 1; None (default) means the window (non-overlapping windows).
    padding: "VALID", "SAME" or ((lo_h, hi_h), (lo_w, hi_w)), each pad < the window (padded pixels
      hold −∞, so they never win).

  Returns:
    y [N, H_out, W_out, C], H_out = ⌊(H + lo + hi − K) / s⌋ + 1.
  """
  x = float_array("max_pool2d", "x", x)
  return _max_pool2d(x, _pool_geometry("max_pool2d", x, window, stride, padding))


def _max_pool2d_fwd(x, geo):
  y = _reduce(x, -jnp.inf, lax.max, geo)
  return y, (x, y)  # the winner of each window is where x equals y (first match wins)


def _max_pool2d_bwd(geo, res, g):
  x, y = res
  xp = jnp.pad(x, ((0, 0), *geo.pads, (0, 0)), constant_values=-jnp.inf)
  dxp = jnp.zeros_like(xp)
  routed = jnp.zeros(y.shape, bool)  # windows whose gradient has found its winner
  for view, place in _window_views(x.shape, geo):
    wins = (lax.slice(xp, *view) == y) & ~routed
    routed = routed | wins
    dxp = dxp + lax.pad(jnp.where(wins, g, 0).astype(x.dtype), np.zeros((), x.dtype), place)
  return (_unpad(dxp, x.shape, geo),)


def _max_pool2d_ref(x, window=2, stride=None, padding="VALID"):
  geo = _pool_geometry("max_pool2d", x, window, stride, padding)
  return _reduce(x, -jnp.inf, lax.max, geo)


def _pool_case(window, stride=None, padding="VALID", distinct=False, n=None):
  """A sampler of small random images for one window geometry; ``distinct``: values 0.05 apart (no
  ties, and no winner changes under finite differences); ``n`` = 0: an empty batch."""
  k = (window, window) if isinstance(window, int) else window
  def sample(rng, dtype):
    batch, c = int(rng.integers(1, 3)) if n is None else n, int(rng.integers(1, 3))
    shape = (batch, int(rng.integers(k[0], k[0] + 4)), int(rng.integers(k[1], k[1] + 4)), c)
    if distinct:
      size = int(np.prod(shape))
      x = (rng.permutation(size).reshape(shape) - size / 2) * 0.05
    else:
      x = rng.uniform(-2, 2, size=shape)
    return (np.asarray(x, dtype),), {"window": window, "stride": stride, "padding": padding}
  return sample


def _pool_forms(distinct):
  return {
      "2×2, non-overlapping": _pool_case(2, distinct=distinct),
      "3×3, stride 1 (overlapping)": _pool_case(3, stride=1, distinct=distinct),
      "(2, 3), stride (1, 2), SAME": _pool_case((2, 3), stride=(1, 2), padding="SAME", distinct=distinct),
      "3×3, stride 2, explicit pads": _pool_case(3, stride=2, padding=((2, 1), (0, 2)), distinct=distinct),
      "2×2, stride 3 (unread rows)": _pool_case(2, stride=3, distinct=distinct),
      "empty batch": _pool_case(2, distinct=distinct, n=0),
  }


_MAX_POOL, _AVG_POOL = _pool_forms(distinct=True), _pool_forms(distinct=False)


_max_pool2d = vjp_rule(max_pool2d, _max_pool2d_fwd, _max_pool2d_bwd, nondiff_argnums=(1,))
register(max_pool2d, _max_pool2d_ref, any_branch(_MAX_POOL), branches=_MAX_POOL,
         note="001 (the max gate); CS231n")


# ---------------------------------------------------------------------------------------- avg_pool2d

def avg_pool2d(x: jax.typing.ArrayLike, window=2, stride=None, padding="VALID") -> jax.Array:
  """y[n, i, j, c] = (1 / K_h·K_w) · Σ of the window at (i·s, j·s) of the zero-padded x.  (Note 001; CS231n.)

  Average pooling is note 001's add gate, scaled by the window's area.

  The divisor is always the window's area K_h·K_w, padded zeros included (PyTorch's
  ``count_include_pad=True``), so the op is linear with one Jacobian everywhere: no non-smooth point.

  Local Jacobian: ∂y[n,i,j,c]/∂x[n,p,q,c] = 1/(K_h·K_w) for each (p, q) in the window. VJP:
  dx = the transposed sum-pool of g / (K_h·K_w): g is dilated by the stride (s − 1 zeros between
  rows), padded by (K − 1 − lo) before and (K − 1 − hi + r) after (r: input rows past the last window,
  which get no gradient), and summed over K_h×K_w windows at stride 1. Each input receives an equal
  share from every window it is in.

  Residuals: none (the backward needs only the static shapes).

  Args:
    x: float array [N, H, W, C] (NHWC).
    window: int or (K_h, K_w) ≥ 1.
    stride: int or (s_h, s_w) ≥ 1; None (default) means the window.
    padding: "VALID", "SAME" or ((lo_h, hi_h), (lo_w, hi_w)), each pad < the window.

  Returns:
    y [N, H_out, W_out, C].
  """
  x = float_array("avg_pool2d", "x", x)
  return _avg_pool2d(x, _pool_geometry("avg_pool2d", x, window, stride, padding))


def _window_mean(x, geo):
  """The mean of each window of the zero-padded x (divisor: the window's area)."""
  return _reduce(x, np.zeros((), x.dtype), lax.add, geo) / (geo.window[0] * geo.window[1])


def _avg_pool2d_fwd(x, geo):
  return _window_mean(x, geo), None  # a linear op: the backward needs only the static shapes


def _avg_pool2d_bwd(geo, _, g):
  rest = _window.leftover(geo.in_hw, geo.window, geo.stride, geo.pads)
  dilate = [(k - 1 - lo, k - 1 - hi + r, s - 1)
            for k, (lo, hi), r, s in zip(geo.window, geo.pads, rest, geo.stride)]
  share = g / (geo.window[0] * geo.window[1])
  spread = lax.pad(share, np.zeros((), g.dtype), ((0, 0, 0), *dilate, (0, 0, 0)))
  return (lax.reduce_window(spread, np.zeros((), g.dtype), lax.add, (1, *geo.window, 1),
                            (1, 1, 1, 1), "VALID"),)


def _avg_pool2d_ref(x, window=2, stride=None, padding="VALID"):
  return _window_mean(x, _pool_geometry("avg_pool2d", x, window, stride, padding))


_avg_pool2d = vjp_rule(avg_pool2d, _avg_pool2d_fwd, _avg_pool2d_bwd, nondiff_argnums=(1,))
register(avg_pool2d, _avg_pool2d_ref, any_branch(_AVG_POOL), branches=_AVG_POOL, note="001 (the add gate); CS231n")
