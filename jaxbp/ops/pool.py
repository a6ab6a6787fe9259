"""Pooling (CS231n's pooling layers): max_pool2d routes, avg_pool2d distributes, over NHWC windows.

A pool is a gate applied per window: max pooling is note 001's max gate with many inputs (the whole
upstream gradient goes to the winner), average pooling is an add gate scaled by 1/(window area)
(every input of the window gets an equal share). Windows may overlap (stride < window); an input in
several windows sums what each of them sends it.
"""

import math
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
  in_hw: tuple  # the input's (H, W): with g's N and C, the shape of the backward's dx
  out_hw: tuple  # the output's (H_out, W_out)

  @property
  def path(self) -> str:
    """How max_pool2d finds its winners: "tiles" when the windows do not overlap (stride ≥ window on
    both axes), "views" for overlapping windows of up to VIEWS_MAX_AREA pixels, else "reduce"."""
    if all(s >= k for s, k in zip(self.stride, self.window)):
      return "tiles"
    return "views" if self.window[0] * self.window[1] <= VIEWS_MAX_AREA else "reduce"


VIEWS_MAX_AREA = 16  # up to 4×4: the strided views' program stays small (it grows with the window's area)


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
  out_hw = _window.out_size(op, xs[1:3], window, stride, pads)
  return _Pool(window, stride, pads, tuple(xs[1:3]), tuple(out_hw))


def _reduce(x, init, op, geo):
  return lax.reduce_window(x, init, op, (1, *geo.window, 1), (1, *geo.stride, 1),
                           ((0, 0), *geo.pads, (0, 0)))


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

  NaN: a NaN is the maximum of its window (as in ``jnp.max`` and PyTorch): y is NaN there and the
  window's whole gradient goes to the NaN (to the first NaN in row-major order, if several), as
  ``torch.nn.functional.max_pool2d`` does; the other inputs of that window get none from it. (Autodiff
  of the reference routes it by XLA's ``select_and_scatter``, to the NaN or not depending on where the
  NaN sits.)

  Residuals: the winner of each window, one integer per output (an int8 offset in the window for
  windows up to 11×11: a quarter of y's bytes in float32); the backward needs neither x nor y. How the
  forward finds it depends on the windows, so that the program's size never grows with the window's
  area past 4×4 (a global pool compiles as fast as a 2×2 one):
  - non-overlapping windows (stride ≥ window: the usual 2×2, a global pool) tile the −∞-padded,
    cropped image: a reshape views x as [N, H_out, K_h, W_out, K_w, C], y is the max over the two
    window axes, the winner the smallest row-major offset kh·K_w + kw holding y (or a NaN), and the
    backward puts g at that offset of each tile;
  - overlapping windows of up to 4×4 (3×3 stride 2, stride 1): for each offset (kh, kw), the strided
    view of x at that offset is compared with y, the last offset visited being the first in
    row-major order, and the backward places g from each offset's matches with one ``lax.pad``;
  - larger overlapping windows: one ``lax.reduce_window`` over (value, index) pairs, whose reducer
    keeps the larger value, NaN above any number, and the smaller index on a tie, gives an int32 flat
    index into x, and the backward scatter-adds g there.
  Padding holds −∞ and never wins, even against a −∞ in x.

  Args:
    x: float array [N, H, W, C] (NHWC); with overlapping windows larger than 4×4, fewer than 2³¹
      elements (the winners are then int32 indices into x).
    window: int or (K_h, K_w) ≥ 1.
    stride: int or (s_h, s_w) ≥ 1; None (default) means the window (non-overlapping windows).
    padding: "VALID", "SAME" or ((lo_h, hi_h), (lo_w, hi_w)), each pad < the window.

  Returns:
    y [N, H_out, W_out, C], H_out = ⌊(H + lo + hi − K) / s⌋ + 1.
  """
  x = float_array("max_pool2d", "x", x)
  geo = _pool_geometry("max_pool2d", x, window, stride, padding)
  if geo.path == "reduce" and x.size > np.iinfo(np.int32).max:
    raise ValueError(f"max_pool2d: argument 'x' must have fewer than 2**31 elements with overlapping windows "
                     f"larger than 4×4 (the winners are int32 indices into it), got shape {x.shape}; pool the "
                     f"batch in parts")
  return _max_pool2d(x, geo)


def _offset_kind(geo):
  """The smallest integer dtype that holds a window's offsets 0 … K_h·K_w (int8 up to 11×11)."""
  area = geo.window[0] * geo.window[1]
  return jnp.int8 if area < 2**7 else jnp.int16 if area < 2**15 else jnp.int32


def _inside(geo, rows, cols):
  """Whether the pixels at (rows, cols) of the padded image (int arrays that broadcast) are in x."""
  (h, w), ((lo_h, _), (lo_w, _)) = geo.in_hw, geo.pads
  return (rows >= lo_h) & (rows < lo_h + h) & (cols >= lo_w) & (cols < lo_w + w)


def _iota(shape, axis):
  return lax.broadcasted_iota(jnp.int32, shape, axis)


# Non-overlapping windows: tiles of the image.

def _tile_pads(geo):
  """lax.pad's config from x [N, H, W, C] to the tiled image [N, H_out·s_h, W_out·s_w, C]: the padding
  before, then padding or (negative) cropping after; the negated config maps the tiled image back."""
  return ((0, 0, 0), *((lo, o * s - n - lo, 0) for (lo, _), o, s, n in
                       zip(geo.pads, geo.out_hw, geo.stride, geo.in_hw)), (0, 0, 0))


def _tiled_fwd(x, geo):
  (ho, wo), (kh, kw), (sh, sw) = geo.out_hw, geo.window, geo.stride
  tiles = lax.pad(x, np.array(-np.inf, x.dtype), _tile_pads(geo))
  x6 = tiles.reshape(x.shape[0], ho, sh, wo, sw, x.shape[3])[:, :, :kh, :, :kw, :]
  y = jnp.max(x6, axis=(2, 4))  # NaN propagates
  rows, cols = (1, ho, kh, 1, 1, 1), (1, 1, 1, wo, kw, 1)
  inside = _inside(geo, _iota(rows, 1) * sh + _iota(rows, 2), _iota(cols, 3) * sw + _iota(cols, 4))
  holds_max = ((x6 == y[:, :, None, :, None]) | jnp.isnan(x6)) & inside
  kind = _offset_kind(geo)
  col, row = lax.broadcasted_iota(kind, (1, 1, 1, 1, kw, 1), 4), lax.broadcasted_iota(kind, (1, 1, kh, 1, 1), 2)
  first_col = jnp.min(jnp.where(holds_max, col, kind(kw)), axis=4)  # in each row of a window; K_w: none
  won = jnp.min(jnp.where(first_col < kw, row * kind(kw) + first_col, kind(kh * kw)), axis=2)  # first row
  return y, won  # row by row, then down the rows: two small reductions that XLA:CPU fuses best


def _tiled_bwd(geo, won, g):
  (ho, wo), (kh, kw), (sh, sw) = geo.out_hw, geo.window, geo.stride
  kind, window = _offset_kind(geo), (1, 1, kh, 1, kw, 1)
  offset = lax.broadcasted_iota(kind, window, 2) * kind(kw) + lax.broadcasted_iota(kind, window, 4)
  zero = np.zeros((), g.dtype)
  g6 = jnp.where(offset == won[:, :, None, :, None], g[:, :, None, :, None], zero)
  g6 = lax.pad(g6, zero, ((0, 0, 0), (0, 0, 0), (0, sh - kh, 0), (0, 0, 0), (0, sw - kw, 0), (0, 0, 0)))
  tiles = g6.reshape(g.shape[0], ho * sh, wo * sw, g.shape[3])
  return lax.pad(tiles, zero, tuple((-lo, -hi, 0) for lo, hi, _ in _tile_pads(geo)))


# Overlapping windows up to 4×4: one strided view of x per offset of the window.

def _window_views(geo, n, c):
  """For each offset k = kh·K_w + kw of the window: the slice of the padded input that offset reads,
  as (start, limit, strides) for ``lax.slice``, the ``lax.pad`` config that puts an output-shaped array
  back in its place in the padded input (zeros elsewhere), and whether each pixel it reads is in x."""
  (h, w), (ho, wo), (sh, sw) = geo.in_hw, geo.out_hw, geo.stride
  hp, wp = h + sum(geo.pads[0]), w + sum(geo.pads[1])
  span = ((ho - 1) * sh + 1, (wo - 1) * sw + 1)
  for kh in range(geo.window[0]):
    for kw in range(geo.window[1]):
      view = ((0, kh, kw, 0), (n, kh + span[0], kw + span[1], c), (1, sh, sw, 1))
      place = ((0, 0, 0), (kh, hp - kh - span[0], sh - 1), (kw, wp - kw - span[1], sw - 1), (0, 0, 0))
      inside = _inside(geo, _iota((1, ho, 1, 1), 1) * sh + kh, _iota((1, 1, wo, 1), 2) * sw + kw)
      yield kh * geo.window[1] + kw, view, place, inside


def _views_fwd(x, geo):
  xp = jnp.pad(x, ((0, 0), *geo.pads, (0, 0)), constant_values=-jnp.inf)
  y = _reduce(x, -jnp.inf, lax.max, geo)  # NaN propagates
  kind = _offset_kind(geo)
  won = jnp.full(y.shape, geo.window[0] * geo.window[1], kind)
  for k, view, _, inside in reversed(list(_window_views(geo, x.shape[0], x.shape[3]))):
    seen = lax.slice(xp, *view)
    won = jnp.where(((seen == y) | jnp.isnan(seen)) & inside, kind(k), won)  # the last visited: the first
  return y, won


def _views_bwd(geo, won, g):
  shape = (g.shape[0], *geo.in_hw, g.shape[3])
  zero = np.zeros((), g.dtype)
  dxp = jnp.zeros((shape[0], *(n + lo + hi for n, (lo, hi) in zip(geo.in_hw, geo.pads)), shape[3]), g.dtype)
  for k, _, place, _ in _window_views(geo, *shape[::3]):
    dxp = dxp + lax.pad(jnp.where(won == k, g, zero), zero, place)  # windows sharing a winner add up
  (lo_h, _), (lo_w, _) = geo.pads
  return lax.slice(dxp, (0, lo_h, lo_w, 0), (shape[0], lo_h + shape[1], lo_w + shape[2], shape[3]))


# Overlapping windows larger than 4×4: one reduce_window over (value, index) pairs.

def _first_max(a, b):
  """The reducer of (value, index) pairs: the larger value, NaN above all; on a tie, the smaller index."""
  (av, ai), (bv, bi) = a, b
  a_nan, b_nan = jnp.isnan(av), jnp.isnan(bv)
  tie = (av == bv) | (a_nan & b_nan)
  a_wins = (av > bv) | (a_nan & ~b_nan) | (tie & (ai < bi))
  return jnp.where(a_wins, av, bv), jnp.where(a_wins, ai, bi)


def _reduce_fwd(x, geo):
  """y and the flat index into x of each window's winner (padding never wins: its index, the largest
  int32, loses every tie)."""
  index = lax.iota(jnp.int32, x.size).reshape(x.shape)
  init = (np.array(-np.inf, x.dtype), np.array(np.iinfo(np.int32).max, np.int32))
  _, won = lax.reduce_window((lax.stop_gradient(x), index), init, _first_max, (1, *geo.window, 1),
                             (1, *geo.stride, 1), ((0, 0), *geo.pads, (0, 0)))
  return jnp.take(x.reshape(-1), won), won  # y is x at each winner


def _reduce_bwd(geo, won, g):
  shape = (g.shape[0], *geo.in_hw, g.shape[3])
  numbers = lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(0,),
                                        scatter_dims_to_operand_dims=(0,))
  dx = lax.scatter_add(jnp.zeros(math.prod(shape), g.dtype), won.reshape(-1, 1), g.reshape(-1), numbers,
                       mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
  return dx.reshape(shape)  # an input that wins several windows sums their g


def _max_pool2d_fwd(x, geo):  # y, and the residual: each window's winner
  if geo.path == "tiles":
    return _tiled_fwd(x, geo)
  return _views_fwd(x, geo) if geo.path == "views" else _reduce_fwd(x, geo)


def _max_pool2d_bwd(geo, won, g):
  if geo.path == "tiles":
    return (_tiled_bwd(geo, won, g),)
  return (_views_bwd(geo, won, g) if geo.path == "views" else _reduce_bwd(geo, won, g),)


def _max_pool2d_ref(x, window=2, stride=None, padding="VALID"):
  geo = _pool_geometry("max_pool2d", x, window, stride, padding)
  return _reduce(x, -jnp.inf, lax.max, geo)


def _pool_case(window, stride=None, padding="VALID", distinct=False, n=None, whole=False):
  """A sampler of small random images for one window geometry; ``distinct``: values 0.05 apart (no
  ties, and no winner changes under finite differences); ``n`` = 0: an empty batch; ``whole``: the
  image is the window's size (a global pool)."""
  k = (window, window) if isinstance(window, int) else window
  def sample(rng, dtype):
    batch, c = int(rng.integers(1, 3)) if n is None else n, int(rng.integers(1, 3))
    extra = (0, 0) if whole else tuple(int(e) for e in rng.integers(0, 4, size=2))
    shape = (batch, k[0] + extra[0], k[1] + extra[1], c)
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
      "3×3, stride 3, explicit pads (padded tiles)": _pool_case(3, stride=3, padding=((1, 2), (2, 0)),
                                                                distinct=distinct),
      "global 5×5 (the window is the image)": _pool_case(5, distinct=distinct, whole=True),
      "5×5, stride 2, SAME (overlapping, larger than 4×4)": _pool_case(5, stride=2, padding="SAME",
                                                                       distinct=distinct),
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
