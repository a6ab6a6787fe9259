"""Group normalisation (Wu & He, 2018): batch norm's formula within each sample, over groups of channels.

Channels-last throughout, like conv2d: x is [N, ..., C] and the C channels split into ``groups``
consecutive groups of C/G; every group of every sample is normalised over its spatial positions and
its C/G channels together, so the statistics never mix samples (unlike batch norm) and the op
behaves the same in training and evaluation.
"""

import numbers

import jax
import jax.numpy as jnp

from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import mixed_dtypes
from jaxbp.ops._registry import register
from jaxbp.ops._registry import uniform
from jaxbp.ops._rule import vjp_rule
from jaxbp.ops._util import float_arrays
from jaxbp.ops._util import static_number
from jaxbp.ops.norm import _affine_norm_bwd
from jaxbp.ops.norm import _affine_norm_fwd


def group_norm(x: jax.typing.ArrayLike, gamma: jax.typing.ArrayLike, beta: jax.typing.ArrayLike,
               groups: int, eps: float = 1e-5) -> jax.Array:
  """y = γ·x̂ + β, x̂ = (x − μ)/√(σ² + ε), μ and σ² per sample and group of channels.  (Note 004.)

  Note 004's batch norm, with the statistics (biased variance) taken over another set of axes.

  Write x as [N, S..., G, C/G] (S the spatial axes). For one sample n and group k, the m = |S|·C/G
  values x[n, S..., k, :] share μ and σ², so the local Jacobian is dense within the group and zero
  between groups. VJP, with h = g·γ (γ broadcast per channel) and the sums over the group's m values:

      dx = (1/σ)/m · (m·h − Σh − x̂·Σ(h·x̂))     (batch norm's compact formula)
      dγ = Σ_{n, S} g·x̂,   dβ = Σ_{n, S} g.

  ``groups = 1`` is layer norm over all of a sample's features; ``groups = C`` is instance norm.
  One formula serves this op, ``batch_norm`` and ``layer_norm`` ("normalise over a set of axes, scale
  and shift per channel"): here on the view [N, S..., G, C/G] of x, with γ and β seen as [G, C/G].
  Residuals, as ``batch_norm``'s: x itself (no new buffer), μ and 1/σ (one number each per sample and
  group), γ; β only for its dtype. x̂ is recomputed in the backward.

  Args:
    x: float array [N, ..., C] (channels last; [N, C] has no spatial axes).
    gamma: float array [C], the scale.
    beta: float array [C], the shift.
    groups: Python int ≥ 1 dividing C.
    eps: Python float added to the variance.
  """
  x, gamma, beta = float_arrays("group_norm", x=x, gamma=gamma, beta=beta)
  shape = jnp.shape(x)
  if len(shape) < 2:
    raise ValueError(f"group_norm: argument 'x' must be [N, ..., C] with at least 2 axes, got shape {shape}")
  c = shape[-1]
  if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1 or c % groups:
    raise ValueError(f"group_norm: argument 'groups' must be an int >= 1 dividing C = {c}, got {groups!r}")
  for name, p in (("gamma", gamma), ("beta", beta)):
    if jnp.shape(p) != (c,):
      raise ValueError(f"group_norm: argument '{name}' must have shape ({c},) for x of shape {shape}, "
                       f"got {jnp.shape(p)}")
  return _group_norm(x, gamma, beta, int(groups), static_number("group_norm", "eps", eps, low=0.0))


def _grouped(x, groups):
  """x [N, S..., C] as [N, S..., G, C/G] (a view), and the axes one group's statistics run over."""
  xg = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
  return xg, tuple(range(1, xg.ndim - 2)) + (xg.ndim - 1,)


def _group_norm_fwd(x, gamma, beta, groups, eps):
  """batch_norm's forward on the grouped view, with γ, β [C] seen as [G, C/G]."""
  xg, axes = _grouped(x, groups)
  yg, res = _affine_norm_fwd(axes, xg, gamma.reshape(xg.shape[-2:]), beta.reshape(xg.shape[-2:]), eps)
  return yg.reshape(x.shape), res


def _group_norm_bwd(groups, eps, res, g):
  """batch_norm's backward on the grouped view; dγ, dβ [G, C/G] back to [C]."""
  del eps
  gg, axes = _grouped(g, groups)
  dxg, dgamma, dbeta = _affine_norm_bwd(axes, res, gg)
  return dxg.reshape(g.shape), dgamma.reshape(-1), dbeta.reshape(-1)


def _group_norm_ref(x, gamma, beta, groups, eps=1e-5):
  xg = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
  axes = tuple(range(1, xg.ndim - 2)) + (xg.ndim - 1,)
  mean = jnp.mean(xg, axis=axes, keepdims=True)
  var = jnp.var(xg, axis=axes, keepdims=True)
  return gamma * ((xg - mean) / jnp.sqrt(var + eps)).reshape(x.shape) + beta


def _group_norm_forms():
  """[N, C] and [N, H, W, C] inputs, groups = 1, in between and C, and an empty batch."""
  def sample(groups, per, spatial, n=None):
    def draw(rng, dtype):
      c = groups * per
      x = uniform(rng, (int(rng.integers(1, 4)) if n is None else n, *spatial, c), dtype, -3.0, 3.0)
      gamma, beta = uniform(rng, (c,), dtype), uniform(rng, (c,), dtype)
      return (x, gamma, beta, groups), {"eps": float(rng.choice([1e-5, 0.1]))}
    return draw

  return {"[N, C], 3 groups": sample(3, 2, ()), "[N, H, W, C], groups = 1 (layer norm)": sample(1, 3, (2, 3)),
          "[N, H, W, C], 2 groups": sample(2, 2, (3, 2)), "groups = C (instance norm)": sample(3, 1, (2, 2)),
          "empty batch": sample(2, 2, (2, 2), n=0)}


_GROUP_NORM = mixed_dtypes(_group_norm_forms(), "[N, H, W, C], 2 groups")


_group_norm = vjp_rule(group_norm, _group_norm_fwd, _group_norm_bwd, nondiff_argnums=(3, 4))
register(group_norm, _group_norm_ref, any_branch(_GROUP_NORM), branches=_GROUP_NORM, note="004")
