"""rope, swiglu and geglu against implementations written here (not the registry's references), in float64,
and their precision in float32 and bfloat16 against float64."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _normal(shape, seed=0, scale=1.0):
  return np.random.default_rng(seed).normal(size=shape) * scale


# ---------------------------------------------------------------------------------------------- rope

def _rope_complex(x, positions, base):
  """RoPE as complex multiplication: (x₁ + i·x₂)·e^{i·a}, in NumPy float64/complex128."""
  dh = x.shape[-1]
  theta = base ** (-np.arange(0, dh, 2) / dh)
  a = np.asarray(positions, np.float64)[..., None] * theta               # [T, Dh/2] or [B, T, Dh/2]
  a = a.reshape((-1,) + a.shape[-2:])[:, :, None, :]
  z = (x[..., :dh // 2] + 1j * x[..., dh // 2:]) * np.exp(1j * a)
  return np.concatenate([z.real, z.imag], axis=-1)


def _rope_matrix(positions, base, dh):
  """The Jacobian of one position's rotation, [.., T, Dh, Dh], as a dense matrix: its transpose is the VJP."""
  theta = base ** (-np.arange(0, dh, 2) / dh)
  a = np.asarray(positions, np.float64)[..., None] * theta
  c, s, half = np.cos(a), np.sin(a), dh // 2
  m = np.zeros(a.shape[:-1] + (dh, dh))
  i = np.arange(half)
  m[..., i, i], m[..., i, i + half] = c, -s                              # out₁ = x₁cos − x₂sin
  m[..., i + half, i + half], m[..., i + half, i] = c, s                 # out₂ = x₂cos + x₁sin
  return m


@pytest.mark.parametrize("pshape", ["none", "T", "BT"])
def test_rope_matches_complex_rotation_and_its_vjp_is_the_transpose(pshape):
  b, t, heads, dh, base = 2, 5, 3, 6, 500.0
  x, g = _normal((b, t, heads, dh)), _normal((b, t, heads, dh), 1)
  positions = {"none": np.arange(t), "T": np.array([7, 0, 3, 3, 4000]),
               "BT": np.random.default_rng(2).integers(0, 9000, size=(b, t))}[pshape]
  kw = {} if pshape == "none" else {"positions": jnp.asarray(positions, jnp.int32)}
  with jax.enable_x64(True):
    out, vjp = jax.vjp(lambda x: ops.rope(x, base=base, **kw), jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(g))
  chex.assert_trees_all_close(np.asarray(out), _rope_complex(x, positions, base), rtol=1e-12, atol=1e-12)
  m = _rope_matrix(np.broadcast_to(positions, (b, t)), base, dh)                  # [B, T, Dh, Dh]
  chex.assert_trees_all_close(np.asarray(out), np.einsum("btij,bthj->bthi", m, x), atol=1e-12)
  chex.assert_trees_all_close(np.asarray(dx), np.einsum("btji,bthj->bthi", m, g), atol=1e-12)
  assert np.allclose(np.linalg.norm(dx, axis=-1), np.linalg.norm(g, axis=-1))    # a rotation keeps norms


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rope_is_as_precise_as_its_dtype_at_large_positions(dtype):
  """Angles in float32 carry an error of |a|·2⁻²⁴ at most (a ≤ 8191 here), the output one rounding to
  the dtype: the bound is their sum, times the largest |x| (bfloat16 inputs are not rotated in bfloat16)."""
  x, g = _normal((1, 4, 2, 8)), _normal((1, 4, 2, 8), 1)
  positions = np.array([0, 1, 4095, 8191])
  xd, gd = jnp.asarray(x, dtype), jnp.asarray(g, dtype)
  out, vjp = jax.vjp(lambda x: ops.rope(x, positions=jnp.asarray(positions)), xd)
  (dx,) = vjp(gd)
  assert out.dtype == dx.dtype == dtype
  want = _rope_complex(np.asarray(xd, np.float64), positions, 10000.0)
  want_dx = np.einsum("tji,bthj->bthi", _rope_matrix(positions, 10000.0, 8), np.asarray(gd, np.float64))
  bound = 2 * (8191 * 2.0 ** -24 + float(jnp.finfo(dtype).eps))
  assert np.max(np.abs(np.asarray(out, np.float64) - want)) <= bound * np.max(np.abs(x))
  assert np.max(np.abs(np.asarray(dx, np.float64) - want_dx)) <= bound * np.max(np.abs(g))


def test_rope_keeps_only_the_positions_and_errors_name_the_argument():
  x = jnp.ones((1, 16, 2, 8))
  _, res = jax.vjp(ops.rope, x)
  kept = [leaf for leaf in jax.tree.leaves(res) if hasattr(leaf, "shape")]
  assert sum(np.size(leaf) for leaf in kept) <= 16                                 # T ints, no cos/sin table
  with pytest.raises(ValueError, match="rope: argument 'x' must be .* Dh even"):
    ops.rope(jnp.ones((1, 2, 3, 5)))
  with pytest.raises(ValueError, match="rope: argument 'positions' must have shape"):
    ops.rope(x, positions=jnp.arange(5))
  with pytest.raises(TypeError, match="rope: argument 'positions' must be an integer array"):
    ops.rope(x, positions=jnp.arange(16.0))
  with pytest.raises(ValueError, match="rope: argument 'base' must be > 0"):
    ops.rope(x, base=0.0)


# ----------------------------------------------------------------------------------- swiglu and geglu

def _sigmoid(a):
  return 0.5 * (1 + np.tanh(a / 2))


def _phi_and_cdf(a):
  import math
  erf = np.vectorize(math.erf)
  return np.exp(-a * a / 2) / np.sqrt(2 * np.pi), 0.5 * (1 + erf(a / np.sqrt(2)))


def _glu_by_hand(kind, a, b, g):
  """(z, da, db) of silu(a)·b or gelu(a)·b (exact, or the tanh form's) in NumPy float64."""
  if kind == "swiglu":
    s = _sigmoid(a)
    act, slope = a * s, s + a * s * (1 - s)
  elif kind == "geglu":
    pdf, cdf = _phi_and_cdf(a)
    act, slope = a * cdf, cdf + a * pdf
  else:
    k = np.sqrt(2 / np.pi)
    t = np.tanh(k * (a + 0.044715 * a ** 3))
    act, slope = 0.5 * a * (1 + t), 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * k * (1 + 3 * 0.044715 * a * a)
  return act * b, g * b * slope, g * act


def _glu(kind):
  return {"swiglu": ops.swiglu, "geglu": ops.geglu,
          "geglu_tanh": lambda a, b: ops.geglu(a, b, approximate=True)}[kind]


@pytest.mark.parametrize("kind", ["swiglu", "geglu", "geglu_tanh"])
def test_glu_matches_the_formula_written_here(kind):
  a, b, g = _normal((4, 6), 0, 3.0), _normal((4, 6), 1), _normal((4, 6), 2)
  a[0, :3] = [-60.0, 60.0, 0.0]
  with jax.enable_x64(True):
    z, vjp = jax.vjp(_glu(kind), jnp.asarray(a), jnp.asarray(b))
    da, db = vjp(jnp.asarray(g))
  for got, want in zip((z, da, db), _glu_by_hand(kind, a, b, g)):
    chex.assert_trees_all_close(np.asarray(got), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 2e-6), (jnp.bfloat16, 8e-3)])
def test_glu_rounds_once_in_low_precision(kind, dtype, tol):
  """Computed in float32, then rounded once: within two units of the dtype of the float64 value, plus
  float32's error where the value nearly cancels (gelu'(a) = 0 near a = −0.75, gelu(a) → 0 for a ≪ 0)."""
  a, b, g = (jnp.asarray(_normal((64, 32), s, 4.0), dtype) for s in range(3))
  z, vjp = jax.vjp(_glu(kind), a, b)
  grads = vjp(g)
  want = _glu_by_hand(kind, *(np.asarray(v, np.float64) for v in (a, b, g)))
  for got, ref in zip((z,) + grads, want):
    assert got.dtype == dtype
    assert np.all(np.abs(np.asarray(got, np.float64) - ref) <= tol * np.abs(ref) + 1e-6 * np.max(np.abs(ref)))


def test_glu_keeps_a_and_b_only_and_errors_name_b():
  a, b = jnp.ones((8, 16)), jnp.ones((8, 16))
  _, res = jax.vjp(ops.swiglu, a, b)
  assert sum(np.size(leaf) for leaf in jax.tree.leaves(res) if hasattr(leaf, "shape")) <= 2 * a.size
  with pytest.raises(ValueError, match=r"swiglu: argument 'b' must have a's shape \(8, 16\)"):
    ops.swiglu(a, b[:3])
  with pytest.raises(TypeError, match="geglu: argument 'b' must be a floating-point array"):
    ops.geglu(a, jnp.ones((8, 16), jnp.int32))
  with pytest.raises(TypeError, match="geglu: argument 'approximate' must be a Python bool"):
    ops.geglu(a, b, approximate="tanh")
