"""The spatial arguments of conv2d and the pools: windows, strides, dilations and paddings over [H, W].

Both families slide a window over the two spatial axes of an NHWC array; these helpers check the
arguments once and turn them into the explicit form the rules compute with (a pair of ints per
argument, and ``((lo, hi), (lo, hi))`` for the padding), so every backward sees explicit pads only.
"""

import numbers

from jax import lax

PADDINGS = ("VALID", "SAME")


def _is_count(v, minimum):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= minimum


def pair(op, name, value, minimum=1):
  """``value`` as a pair of ints ≥ ``minimum`` (an int means the same for H and W), else ValueError."""
  items = (value, value) if isinstance(value, numbers.Integral) else value
  try:
    items = tuple(items)
  except TypeError:
    items = ()
  if len(items) != 2 or not all(_is_count(v, minimum) for v in items):
    raise ValueError(f"{op}: argument '{name}' must be an int >= {minimum} or a pair of them "
                     f"(for H and W), got {value!r}")
  return int(items[0]), int(items[1])


def explicit_padding(op, padding, in_hw, window_hw, stride):
  """``padding`` ("VALID", "SAME" or ``((lo, hi), (lo, hi))``) as explicit pairs of ints ≥ 0.

  ``window_hw`` is the effective window (a dilated kernel spans ``(K − 1)·d + 1`` pixels). "SAME"
  pads so that the output has ceil(H / stride) rows, the extra pixel at the end (as ``lax`` does).
  """
  if isinstance(padding, str):
    if padding.upper() not in PADDINGS:
      raise ValueError(f"{op}: argument 'padding' must be 'VALID', 'SAME' or two (lo, hi) pairs, "
                       f"got {padding!r}")
    named = lax.padtype_to_pads(in_hw, window_hw, stride, padding.upper())
    return tuple((int(lo), int(hi)) for lo, hi in named)
  pads: tuple = ()
  try:
    pads = tuple((lo, hi) for lo, hi in padding)
  except (TypeError, ValueError):
    pass
  if len(pads) != 2 or not all(_is_count(v, 0) for p in pads for v in p):
    raise ValueError(f"{op}: argument 'padding' must be 'VALID', 'SAME' or two (lo, hi) pairs of "
                     f"ints >= 0 (for H and W), got {padding!r}")
  return tuple((int(lo), int(hi)) for lo, hi in pads)


def out_size(op, in_hw, window_hw, stride, pads):
  """The output's [H_out, W_out] = ⌊(H + lo + hi − window) / stride⌋ + 1, or ValueError if < 1."""
  sizes = tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(in_hw, window_hw, stride, pads))
  if min(sizes) < 1:
    raise ValueError(f"{op}: the window {window_hw} does not fit in the padded input "
                     f"(spatial size {in_hw}, padding {pads}): the output would be empty")
  return sizes


def leftover(in_hw, window_hw, stride, pads):
  """Per axis, the padded pixels past the last window, r = H + lo + hi − window − (H_out − 1)·stride.

  The forward never reads them, so the backward gives them no gradient.
  """
  return tuple((n + lo + hi - k) % s for n, k, s, (lo, hi) in zip(in_hw, window_hw, stride, pads))
