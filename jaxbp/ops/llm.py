"""The elementwise rules of today's transformer: rotary position embedding (RoPE) and the gated MLP units.

RoPE rotates each pair of features by an angle that grows with the position; its Jacobian is that
rotation, orthogonal, so the backward is the rotation by the opposite angle and needs only the
positions. SwiGLU and GeGLU multiply an activation of one projection by another; their backward
recomputes the activation from the two inputs, the only residuals (Liger-Kernel's and Unsloth's choice).
Each computes in float32 at least, so a bfloat16 input loses nothing to the angles or the sigmoid.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_array
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import int_array
from jaxbp.ops._util import static_number
from jaxbp.ops.smooth import _gelu_of
from jaxbp.ops.smooth import _gelu_slope
from jaxbp.ops.smooth import _silu_slope

# ---------------------------------------------------------------------------------------------- rope

def rope(x: ArrayLike, *, positions: ArrayLike | None = None, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding, rotate-half form: out = (x₁·cos a − x₂·sin a, x₂·cos a + x₁·sin a).  (Note 001.)

  With θ_i = base^(−2i/Dh) for i < Dh/2, x₁ = x[..., :Dh/2], x₂ = x[..., Dh/2:] and a = position·θ_i
  (GPT-NeoX's and Llama's convention; RoFormer, Su et al. 2021). Each pair (x₁_i, x₂_i) is rotated by
  a_i: the local Jacobian is the rotation R(a), orthogonal, so the VJP is Rᵀ = R(−a):
  dx₁ = g₁·cos a + g₂·sin a, dx₂ = g₂·cos a − g₁·sin a. The positions are integers and get no gradient.

  Residuals: the positions only ([T] or [B, T] ints); cos a and sin a are recomputed in the backward
  (autodiff of the reference keeps both [.., T, Dh/2] tables). Angles are formed in float32 at least,
  so positions up to 2²⁴ are exact.

  Args:
    x: float array [B, T, heads, Dh], Dh even.
    positions: int array [T] or [B, T] of positions; None for 0..T−1.
    base: Python float > 0, the base of the frequencies.

  Returns:
    Array of x's shape and dtype.
  """
  x = float_array("rope", "x", x)
  if x.ndim != 4 or x.shape[-1] % 2:
    raise ValueError(f"rope: argument 'x' must be [B, T, heads, Dh] with Dh even, got shape {x.shape}")
  positions = jnp.arange(x.shape[1], dtype=jnp.int32) if positions is None else int_array("rope", "positions",
                                                                                          positions)
  if positions.shape not in ((x.shape[1],), x.shape[:2]):
    raise ValueError(f"rope: argument 'positions' must have shape {x.shape[1:2]} or {x.shape[:2]} for x of "
                     f"shape {x.shape}, got {positions.shape}")
  base = static_number("rope", "base", base, low=0.0)
  if base == 0.0:
    raise ValueError("rope: argument 'base' must be > 0, got 0.0")
  return _rope(x, positions, base)


def _cos_sin(positions, base, dh, dtype):
  """cos a and sin a, a = position·θ_i, shaped [B|1, T, 1, Dh/2] to broadcast over heads."""
  theta = np.power(base, -np.arange(0, dh, 2, dtype=np.float64) / dh)          # θ_i = base^(−2i/Dh)
  angle = positions.astype(dtype)[..., None] * theta.astype(dtype)               # [T | B, T, Dh/2]
  angle = (angle if positions.ndim == 2 else angle[None])[:, :, None, :]
  return jnp.cos(angle), jnp.sin(angle)


def _rotate(x, cos, sin):
  """(x₁·cos − x₂·sin, x₂·cos + x₁·sin): the rotation of every pair; with −sin, the inverse rotation."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _rope_fwd(x, positions, base):  # in float32 at least: vjp_rule upcasts bfloat16 and float16
  cos, sin = _cos_sin(positions, base, x.shape[-1], x.dtype)
  return _rotate(x, cos, sin), positions  # keeps the positions only


def _rope_bwd(base, positions, g):
  cos, sin = _cos_sin(positions, base, g.shape[-1], g.dtype)
  return _rotate(g, cos, -sin), None      # Rᵀ·g = R(−a)·g: dx₁ = g₁cos + g₂sin, dx₂ = g₂cos − g₁sin


def _rope_ref(x, *, positions=None, base=10000.0):
  dh = x.shape[-1]
  pos = jnp.arange(x.shape[1]) if positions is None else jnp.asarray(positions)
  dt = jnp.promote_types(x.dtype, jnp.float32)
  freq = jnp.asarray(1.0 / base ** (np.arange(0, dh, 2) / dh), dt)   # rounded once: at a = 8191, θ's own
                                                                     # float32 rounding moves the output 1e-5
  a = pos[..., None].astype(dt) * freq
  a = (a if a.ndim == 3 else a[None])[:, :, None, :]
  x1, x2 = x[..., :dh // 2], x[..., dh // 2:]
  c, s = jnp.cos(a).astype(x.dtype), jnp.sin(a).astype(x.dtype)
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def _rope_sampler(shape, positions="none", high=64):
  """x of ``shape`` [B, T, heads, Dh]; positions None, [T] or [B, T] (random ints below ``high``)."""
  def sample(rng, dtype):
    x = uniform(rng, shape, dtype)
    kw = {"base": float(rng.choice([10000.0, 500000.0, 10.0]))}
    if positions != "none":
      pshape = shape[1:2] if positions == "[T]" else shape[:2]
      kw["positions"] = rng.integers(0, high, size=pshape).astype(np.int32)
    return (x,), kw
  return sample


_ROPE = {
    "positions None (0..T-1)": _rope_sampler((2, 3, 2, 4)),
    "positions [T] (any order, repeats)": _rope_sampler((2, 3, 2, 4), "[T]"),
    "positions [B, T] (one row of positions per sequence)": _rope_sampler((2, 3, 2, 4), "[B, T]"),
    "large positions (to 8192)": _rope_sampler((1, 3, 1, 6), "[B, T]", high=8192),
    "Dh = 2 (one frequency), one head": _rope_sampler((1, 4, 1, 2)),
    "T = 0 (no positions: an empty output)": _rope_sampler((2, 0, 2, 4), "[T]"),
}
_rope = vjp_rule(rope, _rope_fwd, _rope_bwd, nondiff_argnums=(2,))
register(rope, _rope_ref, any_branch(_ROPE), branches=_ROPE, note="001 (a rotation's transpose); RoFormer")


# ----------------------------------------------------------------------------------- swiglu and geglu

class _GLUResiduals(NamedTuple):
  a: jax.Array  # [...] the gate's input: act(a) and act'(a) are recomputed from it
  b: jax.Array  # [...] the value: da = g·b·act'(a)


def _glu_inputs(op, a, b):
  a, b = float_arrays(op, a=a, b=b)
  if a.shape != b.shape:
    raise ValueError(f"{op}: argument 'b' must have a's shape {a.shape}, got {b.shape}")
  return a, b


def _glu_fwd(act, a, b):
  """act(a)·b in a and b's promoted dtype (float32 at least: vjp_rule upcasts narrower ones); keeps a and b."""
  dt = jnp.result_type(a, b)
  return act(a.astype(dt)) * b.astype(dt), _GLUResiduals(a, b)


def _glu_bwd(act, slope, res, g):
  """da = g·b·act'(a), db = g·act(a): act recomputed from a; each cotangent of its input's dtype."""
  a, b = res
  a_, b_ = a.astype(g.dtype), b.astype(g.dtype)  # of mixed dtypes: computed in the output's
  return (g * b_ * slope(a_)).astype(a.dtype), (g * act(a_)).astype(b.dtype)


def swiglu(a: ArrayLike, b: ArrayLike) -> jax.Array:
  """z = silu(a)·b = a·σ(a)·b, the gated unit of Llama's MLP (Shazeer 2020).  (Note 001's multiply gate.)

  Local derivatives: ∂z/∂a = b·σ(a)(1 + a(1 − σ(a))), ∂z/∂b = silu(a). VJP: da = g·b·σ(a)(1 + a(1 − σ(a))),
  db = g·silu(a). Residuals: a and b only (σ(a) is recomputed: keeping silu(a) would be one more array
  of a's size). Computed in float32 at least. Smooth everywhere.

  Args:
    a: float array of any shape, the gate projection x·W_gate.
    b: float array of a's shape, the up projection x·W_up.

  Returns:
    Array of a's shape, of a and b's promoted dtype.
  """
  return _swiglu(*_glu_inputs("swiglu", a, b))


def _swiglu_fwd(a, b):
  return _glu_fwd(jax.nn.silu, a, b)


def _swiglu_bwd(res, g):
  return _glu_bwd(jax.nn.silu, _silu_slope, res, g)


def _swiglu_ref(a, b):
  return jax.nn.silu(a) * b


def geglu(a: ArrayLike, b: ArrayLike, *, approximate: bool = False) -> jax.Array:
  """z = gelu(a)·b, the gated unit of T5 v1.1 and Gemma (Shazeer 2020).  (Note 001's multiply gate.)

  Local derivatives: ∂z/∂a = b·gelu'(a), ∂z/∂b = gelu(a), gelu' as in ``gelu`` (Φ(a) + a·φ(a), or the
  tanh form's). VJP: da = g·b·gelu'(a), db = g·gelu(a). Residuals: a and b only (gelu recomputed).
  Computed in float32 at least. Smooth everywhere.

  Args:
    a: float array of any shape, the gate projection.
    b: float array of a's shape, the up projection.
    approximate: Python bool, the tanh form of gelu instead of erf (default False, exact).

  Returns:
    Array of a's shape, of a and b's promoted dtype.
  """
  a, b = _glu_inputs("geglu", a, b)
  if not isinstance(approximate, bool):
    raise TypeError(f"geglu: argument 'approximate' must be a Python bool, got {approximate!r}")
  return _geglu(a, b, approximate)


def _geglu_fwd(a, b, approximate):
  return _glu_fwd(lambda x: _gelu_of(x, approximate), a, b)


def _geglu_bwd(approximate, res, g):
  return _glu_bwd(lambda x: _gelu_of(x, approximate), lambda x: _gelu_slope(x, approximate), res, g)


def _geglu_ref(a, b, *, approximate=False):
  return jax.nn.gelu(a, approximate=approximate) * b


def _glu_sampler(shape, low=-4.0, high=4.0, **kwargs):
  """(a, b) of ``shape``, a in ±[low, high) (with a random sign when low > 0), each keyword drawn from its list."""
  def sample(rng, dtype):
    a = uniform(rng, shape, dtype, low, high)
    if low > 0:
      a = (a * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)
    return (a, uniform(rng, shape, dtype)), {k: bool(rng.choice(v)) for k, v in kwargs.items()}
  return sample


def _glu_branches(low=-4.0, large=(30.0, 100.0), **kwargs):
  return {"[N, F]": _glu_sampler((3, 4), low, -low, **kwargs),
          "[B, T, F] (rank 3)": _glu_sampler((2, 3, 4), low, -low, **kwargs),
          "large |a| (the activation saturates)": _glu_sampler((3, 4), *large, **kwargs),
          "zero-size": _glu_sampler((0, 4), **kwargs)}


_SWIGLU = mixed_dtypes(_glu_branches())
# The tanh form is drawn with |a| < 5: beyond |a| ≈ 3, float32 tanh(u) is within a few roundings of ±1,
# and autodiff of the reference multiplies the rounding of 1 − tanh²(u) (about 1e-7) by a·du/da ~ a³
# (a slope of 1e-3 at a = −87 where the true one is 1e-40): the comparison would measure that noise.
_GEGLU_EXACT = {f"{name}, exact": s for name, s in _glu_branches(approximate=[False]).items()}
_GEGLU_TANH = {f"{name}, tanh": s for name, s in _glu_branches(-3.0, (3.0, 5.0), approximate=[True]).items()}
_GEGLU = mixed_dtypes({**_GEGLU_EXACT, **_GEGLU_TANH})
_swiglu = vjp_rule(swiglu, _swiglu_fwd, _swiglu_bwd)
register(swiglu, _swiglu_ref, any_branch(_SWIGLU), branches=_SWIGLU, note="001, 004 (silu); Shazeer 2020")
_geglu = vjp_rule(geglu, _geglu_fwd, _geglu_bwd, nondiff_argnums=(2,))
register(geglu, _geglu_ref, any_branch(_GEGLU), branches=_GEGLU, note="001, 004 (gelu); Shazeer 2020")
