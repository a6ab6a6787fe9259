"""rms_norm and linear_softmax_cross_entropy: their values, what they keep, and what they never build."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _normal(shape, seed=0, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def _temp_bytes(f, *args):
  return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


# ---------------------------------------------------------------------------------------- rms_norm

def test_rms_norm_is_scale_invariant_so_dx_is_orthogonal_to_x():
  x, g, gamma = _normal((6, 5)), _normal((6, 5), 1), _normal((5,), 2)
  y, vjp = jax.vjp(lambda x: ops.rms_norm(x, gamma, eps=0.0), x)
  chex.assert_trees_all_close(jnp.mean((y / gamma) ** 2, axis=-1), jnp.ones(6), atol=1e-5)
  (dx,) = vjp(g)
  chex.assert_trees_all_close(jnp.sum(dx * x, axis=-1), jnp.zeros(6), atol=1e-4)


def test_rms_norm_step_keeps_no_more_than_autodiff_and_errors_name_gamma():
  x, gamma = _normal((256, 256)), _normal((256,), 1)
  loss = {name: jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))
          for name, f in (("manual", ops.rms_norm), ("autodiff", ops.reference.rms_norm))}
  assert _temp_bytes(loss["manual"], x, gamma) <= _temp_bytes(loss["autodiff"], x, gamma)
  with pytest.raises(ValueError, match=r"rms_norm: argument 'gamma' must have shape \(256,\)"):
    ops.rms_norm(x, gamma[:3])
  with pytest.raises(ValueError, match=r"rms_norm: argument 'eps' must be >= 0"):
    ops.rms_norm(x, gamma, eps=-1.0)


# ------------------------------------------------------------------------ linear_softmax_cross_entropy

def _ce_inputs(n=10, d=4, v=7, seed=0):
  labels = jnp.asarray(np.random.default_rng(seed).integers(0, v, size=n), jnp.int32)
  return _normal((n, d), seed), _normal((d, v), seed + 1), labels


@pytest.mark.parametrize("reduction, chunks", [("mean", (None, 3)), ("sum", (64,)), ("none", (3,))])
def test_linear_ce_equals_softmax_cross_entropy_of_the_logits(reduction, chunks):
  h, w, labels = _ce_inputs()
  want_f = lambda h, w: ops.softmax_cross_entropy(h @ w, labels, reduction=reduction)
  g = jnp.asarray(1.7) if reduction != "none" else _normal((10,), 3)
  want = jax.vjp(want_f, h, w)
  for chunk in chunks:
    f = lambda h, w, c=chunk: ops.linear_softmax_cross_entropy(h, w, labels, chunk_size=c, reduction=reduction)
    got = jax.vjp(f, h, w)
    chex.assert_trees_all_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(got[1](g), want[1](g), rtol=1e-5, atol=1e-6)


def _dots(jaxpr):
  """The output shapes of every dot_general in a jaxpr, nested calls and loops included."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      shapes.append(tuple(eqn.outvars[0].aval.shape))
    for param in eqn.params.values():  # the ClosedJaxpr of a scan, jit or custom_vjp call
      if hasattr(param, "jaxpr") and hasattr(param, "consts"):
        shapes += _dots(param.jaxpr)
  return shapes


def test_plain_evaluation_forms_no_gradient_and_the_backward_no_logits():
  """A plain evaluation computes only the logit chunks h_c·W; under grad with "mean", the gradients
  are formed in the forward and the backward multiplies them by g: no [rows, V] product there."""
  h, w, labels = _ce_inputs(n=12, d=4, v=7)
  f = lambda h, w: ops.linear_softmax_cross_entropy(h, w, labels, chunk_size=4)
  plain = _dots(jax.make_jaxpr(f)(h, w).jaxpr)
  assert plain and set(plain) == {(4, 7)}  # the chunk's logits only: no dh [4, 4], no dW [4, 7] pair
  _, bwd = jax.vjp(f, h, w)
  backward = jax.make_jaxpr(bwd)(jnp.float32(1.0)).jaxpr
  assert _dots(backward) == []
  assert not any(e.primitive.name == "scan" for e in backward.eqns)


def test_linear_ce_step_never_holds_the_logits():
  n, d, v = 256, 16, 2048
  h, w, labels = _ce_inputs(n, d, v)
  steps = {}
  for name, f in (("manual", ops.linear_softmax_cross_entropy),
                  ("autodiff", ops.reference.linear_softmax_cross_entropy)):
    steps[name] = _temp_bytes(jax.grad(lambda h, w, f=f: f(h, w, labels, chunk_size=32), argnums=(0, 1)), h, w)
  logits = n * v * 4
  assert steps["manual"] < logits / 2 < steps["autodiff"]


def test_linear_ce_labels_and_shapes_are_checked():
  h, w, labels = _ce_inputs()
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
    ops.linear_softmax_cross_entropy(h, w, labels.at[0].set(7))
  with pytest.raises(ValueError, match=r"'h' \[N, D\] and 'w' \[D, V\] do not fit"):
    ops.linear_softmax_cross_entropy(h, w.T, labels)
  with pytest.raises(ValueError, match=r"argument 'chunk_size' must be a Python int >= 1"):
    ops.linear_softmax_cross_entropy(h, w, labels, chunk_size=0)
  with pytest.raises(TypeError, match=r"argument 'labels' must be integer class indices, got dtype float32"):
    ops.linear_softmax_cross_entropy(h, w, labels.astype(jnp.float32))
  jitted = jax.jit(lambda y: ops.linear_softmax_cross_entropy(h, w, y, reduction="none"))
  assert np.isnan(np.asarray(jitted(labels.at[3].set(-1))))[3]
