"""Convolution (CS231n's conv layer, in the notes' Jacobian-transpose form): conv2d over NHWC images.

A convolution is a matmul whose weight is shared across positions: every output pixel is the dot
product of one window of the input with the kernel. Its VJP therefore has the matmul's two halves,
each again a convolution: the input's gradient is the *transposed* convolution of the cotangent with
the flipped kernel, the kernel's gradient is the *correlation* of the input with the cotangent.
Both are written here with ``lax.conv_general_dilated``, never with ``jax.vjp``.
"""

from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxbp.ops import _window
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_array
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import same_dtype

_NHWC = ("NHWC", "HWIO", "NHWC")


class _Geometry(NamedTuple):
  """The static spatial arguments, explicit: pairs for (H, W), and ((lo, hi), (lo, hi)) pads."""
  stride: tuple
  pads: tuple
  dilation: tuple


# -------------------------------------------------------------------------------------------- conv2d

def conv2d(x: jax.typing.ArrayLike, w: jax.typing.ArrayLike, b: jax.typing.ArrayLike | None = None, *,
           stride=1, padding="VALID", dilation=1) -> jax.Array:
  """2-D convolution (cross-correlation, as in every framework): y = x ⋆ w + b.  (CS231n; Note 001's
  matmul backward, with the weight shared across positions.)

  With padded input x̃ (``padding`` zeros on each side), stride s and dilation d:

      y[n, i, j, o] = b[o] + Σ_{kh, kw, c} x̃[n, i·s + kh·d, j·s + kw·d, c] · w[kh, kw, c, o]

  Local Jacobians: ∂y[n,i,j,o]/∂x̃[n, i·s + kh·d, j·s + kw·d, c] = w[kh, kw, c, o];
  ∂y[n,i,j,o]/∂w[kh,kw,c,o] = x̃[n, i·s + kh·d, j·s + kw·d, c]; ∂y/∂b[o] = 1. VJP (g = ∂L/∂y):

  dx = the transposed convolution of g with the kernel flipped in H and W and its C and O axes
  swapped: g is dilated by the stride (s − 1 zeros between rows), padded by (K′ − 1 − lo) before
  and (K′ − 1 − hi + r) after, K′ = (K − 1)·d + 1 the dilated kernel and r the input rows past the
  last window (they get no gradient), then convolved with flip(w)ᵀ at dilation d. Each input pixel
  collects g · w from every window it was in: CS231n's ``dx[window] += w · dout``.

  dw[kh, kw, c, o] = Σ_{n,i,j} x̃[n, i·s + kh·d, j·s + kw·d, c] · g[n, i, j, o]: the correlation of
  x with g, a convolution whose "batch" is C and whose contraction runs over N (CS231n's
  ``dw += window · dout``), window stride d, g dilated by s.

  db[o] = Σ_{n,i,j} g[n, i, j, o].

  Residuals: x and w (each gradient needs the other); nothing the size of the output.

  Args:
    x: float array [N, H, W, C] (NHWC).
    w: float array [KH, KW, C, O] (HWIO), KH, KW ≥ 1, of x's dtype.
    b: optional float array [O].
    stride: int or (s_h, s_w) ≥ 1.
    padding: "VALID" (none), "SAME" (output ⌈H / s⌉ rows) or explicit ((lo_h, hi_h), (lo_w, hi_w)) ≥ 0.
    dilation: int or (d_h, d_w) ≥ 1, the spacing of the kernel's taps (atrous convolution).

  Returns:
    y [N, H_out, W_out, O], H_out = ⌊(H + lo + hi − K′) / s⌋ + 1.
  """
  x, w = float_arrays("conv2d", x=x, w=w)
  same_dtype("conv2d", x=x, w=w)  # lax.conv_general_dilated takes one dtype
  b = None if b is None else float_array("conv2d", "b", b)
  geo = _conv_geometry(x, w, b, stride, padding, dilation)
  return _conv2d(x, w, b, geo)


def _conv_geometry(x, w, b, stride, padding, dilation):
  """Checks the shapes and spatial arguments of conv2d; returns them as an explicit _Geometry."""
  xs, ws = jnp.shape(x), jnp.shape(w)
  if len(xs) != 4:
    raise ValueError(f"conv2d: argument 'x' must be [N, H, W, C] (NHWC), got shape {xs}")
  if len(ws) != 4 or ws[2] != xs[3] or min(ws[:2]) < 1:
    raise ValueError(f"conv2d: argument 'w' must be [KH, KW, C, O] (HWIO) with KH, KW >= 1 and C = {xs[3]} "
                     f"(x's channels), got shape {ws}")
  if b is not None and jnp.shape(b) != (ws[3],):
    raise ValueError(f"conv2d: argument 'b' must have shape ({ws[3]},) (w's O), got {jnp.shape(b)}")
  stride = _window.pair("conv2d", "stride", stride)
  dilation = _window.pair("conv2d", "dilation", dilation)
  span = tuple((k - 1) * d + 1 for k, d in zip(ws[:2], dilation))
  pads = _window.explicit_padding("conv2d", padding, xs[1:3], span, stride)
  _window.out_size("conv2d", xs[1:3], span, stride, pads)
  return _Geometry(stride, pads, dilation)


class _ConvResiduals(NamedTuple):
  x: jax.Array         # [N, H, W, C]: dw is the correlation of x with g (the input, no new buffer)
  w: jax.Array         # [KH, KW, C, O]: dx is the transposed convolution of g with w (a parameter)
  b: jax.Array | None  # [O], only for db's dtype (None stays None: no bias, no gradient)


def _conv2d_fwd(x, w, b, geo):
  y = lax.conv_general_dilated(x, w, geo.stride, geo.pads, rhs_dilation=geo.dilation,
                               dimension_numbers=_NHWC)
  return (y if b is None else y + b), _ConvResiduals(x, w, b)


def _conv2d_bwd(geo, res, g):
  x, w, b = res
  dx = _conv_dx(g, w, x.shape, geo).astype(x.dtype)
  dw = _conv_dw(x, g, w.shape, geo).astype(w.dtype)
  db = None if b is None else jnp.sum(g, axis=(0, 1, 2)).astype(b.dtype)
  return dx, dw, db


def _conv_dx(g, w, x_shape, geo):
  """dx: g dilated by the stride, convolved with the flipped, IO-swapped kernel (transposed conv)."""
  spans = [(k - 1) * d + 1 for k, d in zip(w.shape[:2], geo.dilation)]
  rest = _window.leftover(x_shape[1:3], spans, geo.stride, geo.pads)
  pads = [(k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(spans, geo.pads, rest)]
  flipped = w[::-1, ::-1]  # [KH, KW, C, O] read as HWOI: the kernel from O back to C
  return lax.conv_general_dilated(g, flipped, (1, 1), pads, lhs_dilation=geo.stride,
                                  rhs_dilation=geo.dilation,
                                  dimension_numbers=("NHWC", "HWOI", "NHWC"))


def _conv_dw(x, g, w_shape, geo):
  """dw: x correlated with g, C as the batch axis and N contracted: out [KH, KW, C, O]."""
  spans = [(k - 1) * d + 1 for k, d in zip(w_shape[:2], geo.dilation)]
  rest = _window.leftover(x.shape[1:3], spans, geo.stride, geo.pads)
  pads = [(lo, hi - r) for (lo, hi), r in zip(geo.pads, rest)]  # rows past the last window: unread
  return lax.conv_general_dilated(x, g, geo.dilation, pads, rhs_dilation=geo.stride,
                                  dimension_numbers=("CHWN", "IHWO", "HWNC"))


def _conv2d_ref(x, w, b=None, *, stride=1, padding="VALID", dilation=1):
  stride, dilation = _window.pair("conv2d", "stride", stride), _window.pair("conv2d", "dilation", dilation)
  y = lax.conv_general_dilated(x, w, stride, padding if isinstance(padding, str) else tuple(padding),
                               rhs_dilation=dilation, dimension_numbers=_NHWC)
  return y if b is None else y + b


def _conv_case(stride=1, padding="VALID", dilation=1, bias=True, n=None, kernel=None):
  """A sampler of small random images for one geometry; with ``n`` = 0, an empty batch."""
  def sample(rng, dtype):
    batch = int(rng.integers(1, 3)) if n is None else n
    c, o = (int(v) for v in rng.integers(1, 4, size=2))
    kh, kw = kernel or tuple(int(v) for v in rng.integers(1, 4, size=2))
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    h, w_ = (int(rng.integers((k - 1) * d + 1, (k - 1) * d + 5)) for k, d in ((kh, dh), (kw, dw)))
    x = uniform(rng, (batch, h, w_, c), dtype)
    w = np.asarray(uniform(rng, (kh, kw, c, o), dtype) / np.sqrt(kh * kw * c), dtype)
    args = (x, w, uniform(rng, (o,), dtype)) if bias else (x, w)
    return args, {"stride": stride, "padding": padding, "dilation": dilation}
  return sample


_CONV = {
    "VALID, stride 1, bias": _conv_case(),
    "no bias": _conv_case(bias=False),
    "stride 2 (unread rows)": _conv_case(stride=2, kernel=(2, 3)),
    "stride (1, 2), SAME": _conv_case(stride=(1, 2), padding="SAME"),
    "dilation 2, explicit pads": _conv_case(dilation=2, padding=((1, 0), (0, 2))),
    "dilation (2, 1), stride 2, pads > kernel": _conv_case(stride=2, dilation=(2, 1), padding=((3, 1), (0, 2)),
                                                          kernel=(2, 2)),
    "empty batch": _conv_case(n=0),
}


_conv2d = vjp_rule(conv2d, _conv2d_fwd, _conv2d_bwd, nondiff_argnums=(3,))
register(conv2d, _conv2d_ref, any_branch(_CONV), branches=_CONV, note="001 (matmul backward, shared weights); CS231n")
