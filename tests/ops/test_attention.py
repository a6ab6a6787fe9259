"""attention: JAX's own attention, every block geometry, fully masked rows, O(T) memory, errors; grouped-query
heads, window, softcap, segment ids and ALiBi against a dense implementation; peaked rows' precision; the
block products' form (one contracted dimension, no argmax)."""

import chex
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_vjp


def _qkv(b, t, s, h, d, seed=0, dv=None):
  rng = np.random.default_rng(seed)
  q, k = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for n in (t, s))
  v = jnp.asarray(rng.normal(size=(b, s, h, dv or d)), jnp.float32)
  return q, k, v


def _grads(f, q, k, v, g, **kw):
  """Output and VJP, jitted: one compiled program instead of one eager compilation per primitive."""
  def run(q, k, v, g):
    out, vjp = jax.vjp(lambda q, k, v: f(q, k, v, **kw), q, k, v)
    return (out,) + vjp(g)
  return jax.jit(run)(q, k, v, g)


@pytest.mark.parametrize("t, s, causal, block", [(7, 5, True, 3), (5, 9, True, 64), (6, 6, False, 4)])
def test_attention_equals_jax_dot_product_attention_for_every_block_size(t, s, causal, block):
  """Same output as jax.nn.dot_product_attention (top-left causal), and the same output and gradients
  as the reference whether blocks do not divide T or S, or one block holds everything."""
  q, k, v = _qkv(2, t, s, 2, 4)
  want = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  g = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
  expected = _grads(ops.reference.attention, q, k, v, g, causal=causal)
  chex.assert_trees_all_close(expected[0], want, atol=1e-5)
  got = _grads(ops.attention, q, k, v, g, causal=causal, block_size=block)
  chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fully_masked_row_outputs_zero_and_passes_no_gradient():
  q, k, v = _qkv(1, 4, 6, 1, 3)
  mask = np.ones((4, 6), bool)
  mask[2] = False  # query 2 may see no key
  g = jnp.ones((1, 4, 1, 3))
  out, dq, dk, dv = _grads(ops.attention, q, k, v, g, mask=mask, block_size=4)
  chex.assert_trees_all_equal(out[0, 2], jnp.zeros((1, 3)))
  chex.assert_trees_all_equal(dq[0, 2], jnp.zeros((1, 3)))
  # k and v get exactly what the other three rows give them: the masked row adds nothing
  rows = np.array([0, 1, 3])
  others = _grads(ops.attention, q[:, rows], k, v, g[:, rows], mask=mask[rows], block_size=4)
  chex.assert_trees_all_close((dk, dv), others[2:], atol=1e-6)
  assert bool(jnp.all(jnp.isfinite(dq)))


def test_value_width_may_differ_and_mask_broadcasts():
  q, k, v = _qkv(2, 3, 5, 2, 4, dv=6)
  mask = np.random.default_rng(2).random((2, 1, 1, 5)) < 0.6
  mask[:, :, :, 0] = True
  check_vjp(ops.attention, ops.reference.attention, q, k, v,
            kwargs={"mask": mask, "causal": True, "block_size": 2}, checks=["forward", "vjp"])


def _temp_bytes(f, *args):
  return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_training_step_memory_is_linear_in_t_not_quadratic():
  """Compiled temporary memory of value_and_grad: the rule's holds no [T, T] matrix, autodiff's does."""
  sizes = {}
  for t in (256, 512):
    q, k, v = _qkv(1, t, t, 2, 16)
    for name, f in (("manual", ops.attention), ("autodiff", ops.reference.attention)):
      loss = lambda q, k, v, f=f: jnp.sum(f(q, k, v, causal=True, block_size=64) ** 2)
      sizes[name, t] = _temp_bytes(jax.grad(loss, argnums=(0, 1, 2)), q, k, v)
  t_by_t = 2 * 512 * 512 * 4  # one float32 [heads, T, T] matrix at T = 512
  assert sizes["manual", 512] < t_by_t / 2 < sizes["autodiff", 512]
  assert sizes["manual", 512] < 2.5 * sizes["manual", 256]      # about 2x for 2x T
  assert sizes["autodiff", 512] > 3.5 * sizes["autodiff", 256]  # about 4x for 2x T


def test_attention_errors_name_the_argument():
  q, k, v = _qkv(1, 3, 4, 2, 5)
  cases = [
      ((q[0], k, v), {}, ValueError, r"attention: argument 'q' must be \[B, length, heads, dim\]"),
      ((q, k[:, :, :1], v), {}, ValueError, r"attention: shapes do not fit"),
      ((q, k, v.astype(jnp.float16)), {}, TypeError, r"attention: q, k and v must share one dtype"),
      ((q, k, v), {"mask": np.ones((3, 4), np.int32)}, TypeError, r"argument 'mask' must be a boolean"),
      ((q, k, v), {"mask": np.ones((3, 3), bool)}, ValueError, r"argument 'mask' of shape \(3, 3\)"),
      ((q, k, v), {"block_size": 0}, ValueError, r"argument 'block_size' must be a Python int >= 1"),
      ((q, k, v), {"causal": 1}, TypeError, r"argument 'causal' must be a bool"),
      ((q, k, jnp.ones((1, 4, 2, 5), jnp.int32)), {}, TypeError, r"attention: argument 'v'"),
  ]
  for args, kw, err, msg in cases:
    with pytest.raises(err, match=msg):
      ops.attention(*args, **kw)


# ------------------------------------------- grouped-query, window, softcap, segment ids, ALiBi

def _dense(q, k, v, *, causal=False, mask=None, scale=None, window=None, softcap=None, segment_ids=None,
           alibi_slopes=None):
  """An independent attention: K and V gathered for every query head, one dense [B, H, T, S] mask and bias
  written out in NumPy, softmax by jax.nn.softmax; a row with no key outputs 0. jax.grad differentiates it."""
  b, t, h, d = q.shape
  s = k.shape[1]
  kv_of = np.arange(h) // (h // k.shape[2])           # query head → its kv head
  k_all, v_all = k[:, :, kv_of], v[:, :, kv_of]          # [B, S, H, D]: K and V repeated
  i, j = np.meshgrid(np.arange(t), np.arange(s), indexing="ij")
  allow = np.ones((b, h, t, s), bool)
  if causal:
    allow &= j <= i
  if window is not None:
    allow &= np.abs(i - j) < window
  if segment_ids is not None:
    sq, sk = (np.asarray(x) for x in segment_ids)
    allow &= sq[:, None, :, None] == sk[:, None, None, :]
  if mask is not None:
    allow &= np.broadcast_to(np.asarray(mask), allow.shape)
  logits = jnp.einsum("bthd,bshd->bhts", q, k_all) * (d ** -0.5 if scale is None else scale)
  if softcap is not None:
    logits = softcap * jnp.tanh(logits / softcap)
  if alibi_slopes is not None:
    logits = logits - np.asarray(alibi_slopes)[None, :, None, None] * np.abs(i - j)
  p = jax.nn.softmax(jnp.where(allow, logits, -1e30), axis=-1) * allow  # a fully masked row: all 0
  return jnp.einsum("bhts,bshd->bthd", p, v_all)


OPTIONS = {
    "multi-query": dict(kv=1),
    "grouped-query": dict(kv=2),
    "window < block": dict(window=2, block_size=4),
    "window > block, causal": dict(window=5, causal=True, block_size=2),
    "softcap": dict(softcap=2.0),
    "one segment": dict(segments=1),
    "several segments": dict(segments=3),
    "alibi": dict(alibi=True),
    "all at once": dict(kv=2, window=4, causal=True, softcap=3.0, segments=2, alibi=True, masked=True,
                        scale=0.7),
}


def _case(kv=4, window=None, causal=False, softcap=None, segments=None, alibi=False, masked=False,
          scale=None, block_size=3, t=11, s=11):
  rng = np.random.default_rng(7)
  q = rng.normal(size=(2, t, 4, 5))
  k, v = rng.normal(size=(2, s, kv, 5)), rng.normal(size=(2, s, kv, 3))
  kw = {"causal": causal, "window": window, "softcap": softcap, "scale": scale}
  if segments is not None:
    kw["segment_ids"] = tuple(np.sort(rng.integers(0, segments, size=(2, n))).astype(np.int32) for n in (t, s))
  if alibi:
    kw["alibi_slopes"] = 2.0 ** -np.arange(1, 5)
  if masked:
    kw["mask"] = rng.random((2, 1, t, s)) < 0.8
  return (q, k, v), kw, block_size


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_equals_an_independent_dense_implementation_in_float64(name):
  """Output and all three gradients (dK and dV summed over each group) of the blockwise rule equal jax.grad
  of a dense implementation that repeats K and V and builds the mask and bias whole."""
  (q, k, v), kw, block = _case(**OPTIONS[name])
  with jax.enable_x64(True):
    g = np.random.default_rng(8).normal(size=q.shape[:3] + (v.shape[-1],))
    want = _grads(_dense, q, k, v, g, **kw)
    got = _grads(ops.attention, q, k, v, g, block_size=block, **kw)
    chex.assert_trees_all_close(got, want, atol=1e-12, rtol=1e-10)
    assert float(jnp.max(jnp.abs(want[2]))) > 0.1  # dK is not trivially 0


def _matmuls_run(jaxpr, trips=1):
  """How many block products a program runs: each dot_general times the lengths of the scans around it
  (the larger branch of a cond), read from the jaxpr, so exactly the same on every machine."""
  total = 0
  for eqn in jaxpr.eqns:
    total += trips if eqn.primitive.name == "dot_general" else 0
    inner = trips * eqn.params["length"] if eqn.primitive.name == "scan" else trips
    subs = [x.jaxpr if isinstance(x, jax.extend.core.ClosedJaxpr) else x
            for val in eqn.params.values() for x in (val if isinstance(val, (tuple, list)) else (val,))
            if isinstance(x, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr))]
    runs = [_matmuls_run(sub, inner) for sub in subs]
    total += (max(runs) if eqn.primitive.name == "cond" else sum(runs)) if runs else 0
  return total


def _eqns(jaxpr):
  """Every equation of a jaxpr, those of its scans, conds and inner programs included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for val in eqn.params.values():
      for x in val if isinstance(val, (tuple, list)) else (val,):
        if isinstance(x, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
          yield from _eqns(x.jaxpr if isinstance(x, jax.extend.core.ClosedJaxpr) else x)


def test_block_products_contract_one_dimension_and_no_argmax_runs():
  """Grouped heads (4 on 2): each block product contracts one dimension, the group's heads and queries one
  row dimension (contracting both made the CPU's dot copy every [bq, bk] block: a training step 1.2-1.3x
  slower); the top key is found without argmax (a (value, index) reduce the CPU runs unvectorized: it
  doubled the forward). Read from the training step's jaxpr, the same on every machine."""
  q, k = jnp.ones((1, 64, 4, 8)), jnp.ones((1, 64, 2, 8))
  loss = lambda q, k, v: jnp.sum(ops.attention(q, k, v, causal=True, block_size=16))
  eqns = list(_eqns(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, k).jaxpr))
  contracted = [len(e.params["dimension_numbers"][0][0]) for e in eqns if e.primitive.name == "dot_general"]
  assert len(contracted) >= 7 and set(contracted) == {1}, contracted  # 2 products forward, 5 backward
  assert not {"argmax", "argmin"} & {e.primitive.name for e in eqns}


@pytest.mark.parametrize("causal", [False, True])
def test_a_window_makes_the_work_grow_as_t_times_window(causal):
  """Forward and backward together: doubling T doubles the block products under a window of 64 (blocks
  wholly outside it are not visited) and quadruples them without one."""
  def products(t, window):
    q = jnp.ones((1, t, 2, 8))
    loss = lambda q, k, v: jnp.sum(ops.attention(q, k, v, causal=causal, window=window, block_size=32))
    return _matmuls_run(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, q, q).jaxpr)
  assert products(1024, 64) == 2 * products(512, 64)
  assert products(1024, None) >= 3.5 * products(512, None)
  assert products(1024, 64) < products(1024, None) / 6


def _peaked(amp=2.5, seed=0):
  """Keys close to the queries (k = 0.9·q + 0.1·noise, q of scale 2.5): each row's softmax nearly one-hot."""
  rng = np.random.default_rng(seed)
  q = amp * rng.normal(size=(1, 256, 4, 64))
  k = 0.9 * q + 0.1 * amp * rng.normal(size=q.shape)
  return q, k, rng.normal(size=q.shape), rng.normal(size=q.shape)


def _error(f, dtype, truth, q, k, v, g):
  """max |dq − truth| / max |truth| and the same for dk, the rule run in ``dtype``."""
  got = _grads(f, *(jnp.asarray(x, dtype) for x in (q, k, v, g)), causal=True)
  return [float(jnp.max(jnp.abs(a.astype(jnp.float64) - b)) / jnp.max(jnp.abs(b)))
          for a, b in zip(got[1:3], truth[1:3])]


@pytest.mark.parametrize("dtype, bound", [(jnp.float32, 1e-4), (jnp.bfloat16, 5e-2)])
def test_peaked_rows_keep_dq_and_dk_as_precise_as_autodiff(dtype, bound):
  """Where P is nearly one-hot, FlashAttention-2's dP − rowsum(dO ∘ O) cancels (dq 2e-2 off in float32, 1.5
  in bfloat16, where autodiff is 5e-3 and 1.4 off); computed as dO·(V_t − O) with O − V_t kept exactly,
  dq and dk are no further from the float64 truth than autodiff run in the same dtype, and within the bound."""
  q, k, v, g = _peaked()
  with jax.enable_x64(True):
    truth = _grads(ops.reference.attention, q, k, v, g, causal=True)
    rule, autodiff = (_error(f, dtype, truth, q, k, v, g) for f in (ops.attention, ops.reference.attention))
  assert max(rule) <= bound
  assert all(r <= a for r, a in zip(rule, autodiff)), (rule, autodiff)


def test_option_errors_name_the_argument():
  q, k, v = _qkv(1, 3, 4, 4, 5)
  ids = (np.zeros((1, 3), np.int32), np.zeros((1, 4), np.int32))
  cases = [
      ((q, k[:, :, :3], v[:, :, :3]), {}, ValueError, r"argument 'k' has 3 kv heads, which must divide q's 4"),
      ((q, k, v), {"window": 0}, ValueError, r"argument 'window' must be a Python int >= 1 or None"),
      ((q, k, v), {"window": 2.0}, ValueError, r"argument 'window'"),
      ((q, k, v), {"softcap": -1.0}, ValueError, r"argument 'softcap' must be > 0"),
      ((q, k, v), {"softcap": "x"}, TypeError, r"argument 'softcap'"),
      ((q, k, v), {"segment_ids": ids[0]}, TypeError, r"argument 'segment_ids' must be a pair"),
      ((q, k, v), {"segment_ids": (ids[0], ids[0])}, ValueError, r"argument 'segment_ids' must hold"),
      ((q, k, v), {"segment_ids": (ids[0].astype(float), ids[1])}, TypeError, r"argument 'segment_ids'"),
      ((q, k, v), {"alibi_slopes": np.ones(3)}, ValueError, r"argument 'alibi_slopes' must have shape"),
      ((q, k, v), {"alibi_slopes": np.ones(4, np.int32)}, TypeError, r"argument 'alibi_slopes'"),
  ]
  for args, kw, err, msg in cases:
    with pytest.raises(err, match=msg):
      ops.attention(*args, **kw)


def test_bfloat16_inputs_are_kept_in_bfloat16_for_the_backward():
  """vjp_rule keeps an input residual in its own dtype by its identity; the jitted forward's outputs lost
  it, so q, k and v were kept as float32 copies (twice their bytes). Now only O and O − V_t are float32."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 64, 2, 8)), jnp.bfloat16) for _ in range(3))
  _, pull = jax.vjp(lambda q, k, v: ops.attention(q, k, v, causal=True), q, k, v)
  kept = [str(a.dtype) for a in jax.tree.leaves(pull) if getattr(a, "shape", None) == q.shape]
  assert sorted(kept) == ["bfloat16"] * 3 + ["float32"] * 2
