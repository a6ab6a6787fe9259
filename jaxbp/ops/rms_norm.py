"""RMS normalisation (Zhang & Sennrich 2019): layer norm without the mean, with Liger-Kernel's residuals."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import static_number
from jaxbp.ops._util import unbroadcast


def rms_norm(x: ArrayLike, gamma: ArrayLike, eps: float = 1e-6) -> jax.Array:
  """RMS normalisation over the last axis: y = γ·x̂, x̂ = x·r, r = 1/√(mean_d(x²) + ε) per row.  (Note 004.)

  Each row's local Jacobian is dense along its D features: ∂x̂_k/∂x_j = r·(δ_kj − x̂_k·x̂_j/D).
  VJP, with h = g·γ:
  dx = r·(h − x̂·mean_d(h·x̂)), dγ = Σ_rows g·x̂.
  (Layer norm's compact formula without the mean's term Σh, since no mean is subtracted.)

  Residuals: the input x, r (one float per row) and γ; x̂ = x·r is recomputed in the backward, one
  multiply per element. Keeping x̂ instead would cost the same [..., D] array, but as a NEW buffer,
  while x is usually alive anyway (an argument of the jitted step, or a residual stream the caller
  keeps): with x kept, the rule's forward adds only N floats to what lives until the backward. Autodiff
  of the plain reference keeps x, r and x·r (or x²): at least one [..., D] buffer more. As Liger-Kernel's
  RMSNorm, which caches the reciprocal RMS per row.

  Args:
    x: float array [..., D].
    gamma: float array [D], the scale.
    eps: Python float ≥ 0 added to the mean square (a row of zeros needs ε > 0).

  Returns:
    Array of x's shape.
  """
  x, gamma = float_arrays("rms_norm", x=x, gamma=gamma)
  if x.ndim < 1:
    raise ValueError("rms_norm: argument 'x' needs a feature axis [..., D], got a scalar")
  if gamma.shape != x.shape[-1:]:
    raise ValueError(f"rms_norm: argument 'gamma' must have shape {x.shape[-1:]} for x of shape "
                     f"{x.shape}, got {gamma.shape}")
  return _rms_norm(x, gamma, static_number("rms_norm", "eps", eps, low=0.0))


class _RMSResiduals(NamedTuple):
  x: jax.Array      # [..., D] the input (held by the caller anyway): x̂ = x·r is recomputed from it
  r: jax.Array      # [..., 1] 1/rms per row
  gamma: jax.Array  # [D]: h = g·γ


def _rms_norm_fwd(x, gamma, eps):
  r = jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
  return gamma * (x * r), _RMSResiduals(x, r, gamma)


def _rms_norm_bwd(eps, res, g):
  x, r, gamma = res
  xhat = x * r                                                        # x̂ = x·r, recomputed
  h = g * gamma                                                       # h = g·γ
  dx = r * (h - xhat * jnp.mean(h * xhat, axis=-1, keepdims=True))    # dx = r·(h − x̂·mean(h·x̂))
  dgamma = unbroadcast(g * xhat, gamma.shape, gamma.dtype)            # dγ = Σ_rows g·x̂
  return dx.astype(x.dtype), dgamma


def _rms_norm_ref(x, gamma, eps=1e-6):
  return gamma * x / jnp.sqrt(jnp.mean(x ** 2, axis=-1, keepdims=True) + eps)


def _rms_sampler(lead, d=(1, 5), eps=(1e-6, 0.1), rows=(1, 3)):
  def sample(rng, dtype):
    shape = tuple(int(rng.integers(rows[0], rows[1] + 1)) for _ in range(lead)) + (int(rng.integers(d[0], d[1] + 1)),)
    x = uniform(rng, shape, dtype, low=-3.0, high=3.0)
    return (x, uniform(rng, shape[-1:], dtype)), {"eps": float(rng.choice(eps))}
  return sample


_BRANCHES = mixed_dtypes({
    "[D] (one row)": _rms_sampler(0),
    "[N, D]": _rms_sampler(1),
    "[B, T, D] (rank 3)": _rms_sampler(2),
    "D = 1": _rms_sampler(1, d=(1, 1)),
    "N = 0 (no rows: an empty output and dγ = 0, as jnp)": _rms_sampler(1, rows=(0, 0)),
    "D = 0 (no features: an empty output, empty gradients)": _rms_sampler(1, d=(0, 0)),
})

_rms_norm = vjp_rule(rms_norm, _rms_norm_fwd, _rms_norm_bwd, nondiff_argnums=(2,))
register(rms_norm, _rms_norm_ref, any_branch(_BRANCHES), branches=_BRANCHES, note="004 (layer norm's kin)")
