"""linear_distillation_loss against divergences written here in NumPy float64 (loss, and its gradient by
the formula dL/dz = softmax Jacobian · dL/dq), its teacher's zero cotangents, precision and memory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _by_hand(h, w, ht, wt, divergence, beta, tau):
  """Per-row divergence [N] and dL_n/dz_n [N, V] (z = h·W/τ) in float64, with dL/dq written out and
  pushed through softmax's Jacobian diag(q) − q·qᵀ as a dense matrix per row."""
  q, p = np.exp(_log_softmax(h @ w / tau)), np.exp(_log_softmax(ht @ wt / tau))
  if divergence == "kl":
    loss, dq = (p * np.log(p / q)).sum(-1), -p / q
  elif divergence == "reverse_kl":
    loss, dq = (q * np.log(q / p)).sum(-1), np.log(q / p) + 1
  else:
    m = beta * p + (1 - beta) * q
    loss = beta * (p * np.log(p / m)).sum(-1) + (1 - beta) * (q * np.log(q / m)).sum(-1)
    dq = -beta * p * (1 - beta) / m + (1 - beta) * (np.log(q / m) + 1) - (1 - beta) ** 2 * q / m
  jac = np.einsum("nj,jk->njk", q, np.eye(q.shape[-1])) - np.einsum("nj,nk->njk", q, q)
  return loss, np.einsum("njk,nj->nk", jac, dq)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_the_divergence_written_here_in_float64(divergence, reduction):
  rng = np.random.default_rng(0)
  n, d, d_t, v, beta, tau = 7, 4, 3, 9, 0.3, 2.0
  h, w, ht, wt = (rng.normal(size=s) for s in ((n, d), (d, v), (n, d_t), (d_t, v)))
  labels = np.array([0, -100, 3, -100, -100, 5, 1], np.int32)      # chunk_size 2: rows 3-4 are one chunk
  keep = labels != -100
  loss, dz = _by_hand(h, w, ht, wt, divergence, beta, tau)
  g = np.linspace(0.5, 1.5, n) if reduction == "none" else np.asarray(1.7)
  row_g = {"mean": g / keep.sum(), "sum": g, "none": g}[reduction] * keep
  want = {"mean": (loss * keep).sum() / keep.sum(), "sum": (loss * keep).sum(), "none": loss * keep}[reduction]
  grad = dz * np.broadcast_to(row_g, (n,))[:, None] / tau
  with jax.enable_x64(True):
    f = lambda h, w, ht, wt: ops.linear_distillation_loss(
        h, w, ht, wt, labels=labels, divergence=divergence, beta=beta, temperature=tau, ignore_index=-100,
        chunk_size=2, reduction=reduction)
    got, vjp = jax.vjp(f, *(jnp.asarray(a) for a in (h, w, ht, wt)))
    dh, dw, dht, dwt = (np.asarray(a) for a in vjp(jnp.asarray(g)))
  chex.assert_trees_all_close(np.asarray(got), want, rtol=1e-12, atol=1e-14)
  chex.assert_trees_all_close(dh, grad @ w.T, rtol=1e-11, atol=1e-14)
  chex.assert_trees_all_close(dw, h.T @ grad, rtol=1e-11, atol=1e-14)
  assert not dht.any() and not dwt.any()                            # the teacher is a constant


def test_identical_teacher_and_student_give_zero_loss_and_gradient():
  rng = np.random.default_rng(1)
  h, w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
  for divergence in ("kl", "reverse_kl", "jsd"):
    loss, (dh, dw) = jax.value_and_grad(
        lambda h, w, div=divergence: ops.linear_distillation_loss(h, w, h, w, divergence=div), argnums=(0, 1))(h, w)
    assert abs(float(loss)) < 1e-6 and float(jnp.abs(dh).max()) < 1e-6 and float(jnp.abs(dw).max()) < 1e-6


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-4), (jnp.bfloat16, 2e-2)])
def test_confident_teacher_and_student_keep_their_precision(dtype, tol):
  """A teacher sure of its class (p = 0.999) and a student giving it 1e-6: large KL and a gradient of
  almost exactly q − p, computed in float32 from inputs rounded to ``dtype``."""
  v, n = 32, 4
  cls = np.arange(n) % v
  hot = np.where(np.arange(v) == cls[:, None], 1.0, 0.0)
  ht = np.log(0.999) * hot + np.log(0.001 / (v - 1)) * (1 - hot)
  h = np.log(1e-6) * hot + np.log((1 - 1e-6) / (v - 1)) * (1 - hot)
  h, ht = (np.asarray(jnp.asarray(a, dtype), np.float64) for a in (h, ht))
  for divergence in ("kl", "jsd"):
    loss, dz = _by_hand(h, np.eye(v), ht, np.eye(v), divergence, 0.5, 1.0)
    f = lambda h, div=divergence: ops.linear_distillation_loss(h, jnp.eye(v, dtype=dtype), jnp.asarray(ht, dtype),
                                                               jnp.eye(v, dtype=dtype), divergence=div, reduction="sum")
    got, vjp = jax.vjp(f, jnp.asarray(h, dtype))
    (dh,) = vjp(jnp.ones((), dtype))
    assert abs(float(got) - loss.sum()) <= tol * loss.sum()
    assert np.max(np.abs(np.asarray(dh, np.float64) - dz)) <= tol * np.max(np.abs(dz)) + 4 * 2.0 ** -23


def test_memory_stays_chunked():
  """Compiled temporary memory of the jsd step (the largest: log M and a beside q and p) at N 2048,
  V 16384: 0.13× autodiff's (0.195× at the issue's N 4096, D 256, V 32768; compiled, never run)."""
  n, d, v = 2048, 128, 16384
  args = tuple(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((n, d), (d, v), (n, d), (d, v)))
  mem = {}
  for name, f in (("rule", ops.linear_distillation_loss), ("autodiff", ops.reference.linear_distillation_loss)):
    step = jax.grad(lambda h, w, ht, wt, f=f: f(h, w, ht, wt, divergence="jsd"), argnums=(0, 1))
    mem[name] = jax.jit(step).lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert mem["rule"] <= mem["autodiff"] / 4
  assert mem["rule"] <= n * v * 4 / 2                  # less than half of one [N, V] float32 matrix


def test_bad_arguments_are_named():
  h, w = jnp.ones((3, 2)), jnp.ones((2, 5))
  cases = [({"divergence": "tvd"}, "'divergence' must be one of"),
           ({"divergence": "jsd", "beta": 1.0}, "'beta' must be in \\(0, 1\\)"),
           ({"temperature": 0.0}, "'temperature' must be > 0"),
           ({"ignore_index": -100}, "'ignore_index' needs 'labels'")]
  for kw, message in cases:
    with pytest.raises(ValueError, match=message):
      ops.linear_distillation_loss(h, w, h, w, **kw)
  with pytest.raises(ValueError, match="'h_teacher' \\[N, D_t\\] and 'w_teacher' \\[D_t, V\\] must fit"):
    ops.linear_distillation_loss(h, w, h, jnp.ones((2, 4)))


def test_bfloat16_mean_gradients_are_rounded_once():
  """dh and dW are formed in float32 in the forward and scaled by g / N in the backward: rounded to bfloat16
  once, after the scaling. Rounded before it too (as they were), N = 60 (1/60 not a power of two) put dh
  4.6e-3 of its largest entry off the float64 truth, beyond the 2⁻⁸ one rounding costs."""
  rng = np.random.default_rng(0)
  draw = lambda *shape: jnp.asarray(rng.standard_normal(shape) * 0.3, jnp.bfloat16)
  args = (draw(60, 32), draw(32, 256), draw(60, 16), draw(16, 256))
  loss = lambda h, w, h_t, w_t: ops.linear_distillation_loss(h, w, h_t, w_t)
  got = jax.grad(loss, (0, 1))(*args)
  with jax.enable_x64(True):
    truth = jax.grad(loss, (0, 1))(*(a.astype(jnp.float64) for a in args))
  for d, t in zip(got, truth):
    t = np.asarray(t)
    assert d.dtype == jnp.bfloat16
    assert np.max(np.abs(np.asarray(d, np.float64) - t)) <= (2.0 ** -8 + 1e-4) * np.max(np.abs(t))
