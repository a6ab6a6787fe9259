"""Inputs that differ: in size (a check skipped for one input and run for another), in dtype (a bfloat16
or float32 prediction beside a float32 or float64 target), and a forward under differentiation that is
other code than the plain call (issue 19, item 4)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops
from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY
import jaxbp.ops.linear_cross_entropy as lce

RNG = np.random.default_rng(0)


def _tanh_times_norm(x, y):
  return jnp.tanh(x) * jnp.sum(y ** 2)


# Each case: one input's Jacobian is above jacobian_max_size (skipped), the other's is built.
MIXED_SIZES = {
    "tanh(x)·Σy², x [25, 24], y [3] (issue 19)": (
        _tanh_times_norm, _tanh_times_norm, (RNG.normal(size=(25, 24)), RNG.normal(size=(3,))), {}),
    "matmul, x [2, 3], w [3, 400]": (
        ops.matmul, ops.reference.matmul, (RNG.normal(size=(2, 3)), RNG.normal(size=(3, 400))), {}),
    "layer_norm, x [64, 16], gamma and beta [16], jacobian_max_size 20000": (
        ops.layer_norm, ops.reference.layer_norm,
        (RNG.normal(size=(64, 16)), RNG.uniform(0.5, 1.5, size=(16,)), RNG.normal(size=(16,))),
        {"jacobian_max_size": 20_000}),
}


@pytest.mark.parametrize("case", MIXED_SIZES)
def test_a_check_skipped_for_one_input_asks_no_power_of_it(case):
  """The self-test replays a check only for the inputs that check ran on: it demanded the skipped
  Jacobian's power for the large input and failed a correct function."""
  fn, ref, args, options = MIXED_SIZES[case]
  args = tuple(a.astype(np.float32) for a in args)
  report = check_vjp(fn, ref, *args, **options)
  skipped = {label for check, label, _ in report.skipped if check == "jacobian"}
  checked = {e.input for e in report.entries if e.check == "jacobian"}
  assert skipped and checked and not skipped & checked
  for note in report.notes:
    if note.startswith("power for "):
      label = note[len("power for "):].split(":")[0]
      assert ("jacobian" in note) == (label in checked), note


def test_primal_of_the_differentiated_forward_is_compared(monkeypatch):
  """linear_softmax_cross_entropy forms its gradients in the forward (``_pass``): a loss planted there as
  lse + z_y (for lse − z_y) leaves the plain call right and must fail ``forward`` for jax.vjp's output."""
  rule = REGISTRY["linear_softmax_cross_entropy"]
  args, kwargs = rule.branches["mean (gradients formed in the forward), chunks that do not divide N"](
      np.random.default_rng(0), np.float32)
  check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs)
  real = lce._pass  # pylint: disable=protected-access

  def planted(h, w, labels, chunks, row_scale, lse=None):
    loss, dh, dw = real(h, w, labels, chunks, row_scale, lse)
    if lse is None:  # the forward's pass: lse + z_y = (lse − z_y) + 2·z_y
      z_y = jnp.take_along_axis(h @ w, labels[:, None], axis=-1)[:, 0]
      loss = loss + 2 * z_y.astype(loss.dtype)
    return loss, dh, dw
  monkeypatch.setattr(lce, "_pass", planted)
  with pytest.raises(AssertionError) as excinfo:
    check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs)
  failed = {(e.check, e.input) for e in excinfo.value.report.failures}
  assert ("forward", "output (jax.vjp)") in failed and ("forward", "output") not in failed


# ------------------------------------------------------------------------------------------ mixed dtypes

def _float_args(args):
  """Positions of the positional arguments holding a floating array."""
  return [i for i, a in enumerate(args) if any(
      hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(a))]


def _mixed_branch(rule):
  names = [b for b in rule.branches if "mixed dtypes" in b]
  return rule.branches[names[0]] if names else None


def _takes_several_float_inputs(rule):
  return any(len(_float_args(draw(np.random.default_rng(0), np.float32)[0])) >= 2
             for draw in rule.branches.values())


# The rules with several float inputs that have no mixed-dtype branch, and why.
REFUSE_MIXED = {  # one dtype by design: a TypeError naming the arguments
    "attention": "q, k and v must share one dtype",
    "conv2d": "argument 'w' must have the dtype of 'x'",
    "linear_distillation_loss": "linear_distillation_loss: 'h' and 'w'",
    "linear_softmax_cross_entropy": "'h' and 'w'",
}
SEVERAL = sorted(name for name, rule in REGISTRY.items() if _takes_several_float_inputs(rule))


@pytest.mark.parametrize("name", SEVERAL)
def test_every_rule_with_several_float_inputs_has_a_mixed_dtype_branch(name):
  if name in REFUSE_MIXED:
    pytest.skip("no mixed-dtype branch: tested below")
  draw = _mixed_branch(REGISTRY[name])
  assert draw is not None, f"{name}: add a branch with mixed dtypes (ops._registry.mixed_dtypes)"
  for dtype, lower in ((np.float32, jnp.bfloat16), (np.float64, np.float32)):
    args, _ = draw(np.random.default_rng(0), dtype)
    dtypes = {np.dtype(x.dtype) for x in jax.tree.leaves(args) if hasattr(x, "dtype")
              and jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {np.dtype(dtype), np.dtype(lower)}, (name, dtypes)


@pytest.mark.parametrize("name", sorted(REFUSE_MIXED))
def test_a_rule_that_refuses_mixed_dtypes_says_so(name):
  rule = REGISTRY[name]
  args, kwargs = next(iter(rule.branches.values()))(np.random.default_rng(0), np.float32)
  args = (np.asarray(args[0]).astype(jnp.bfloat16),) + tuple(args[1:])
  with pytest.raises(TypeError, match=REFUSE_MIXED[name]):
    rule.fn(*args, **kwargs)


@pytest.mark.parametrize("name, low", [("rnn", (1,)), ("lstm", (1, 2))])  # h0 or c0 alone: the registry's branches
@pytest.mark.parametrize("dtype, lower", [(np.float32, jnp.bfloat16), (np.float64, np.float32)])
def test_a_recurrent_state_of_another_dtype_than_x(name, low, dtype, lower):
  """h0 (c0) one precision below x and the weights: the scan's carry was h0's dtype while each step
  returned the promoted one (lax.scan's carry type error, in the rule and in its reference). The states
  are now in the promoted dtype, and each gradient in its own input's dtype."""
  rule = REGISTRY[name]
  args, kwargs = rule.branches["N, T > 1"](np.random.default_rng(1), dtype)
  args = tuple(np.asarray(a).astype(lower) if i in low else a for i, a in enumerate(args))
  with jax.enable_x64(dtype == np.float64):
    check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs, checks=("forward", "vjp"), self_test=False)
    out = rule.fn(*args)
    grads = jax.grad(lambda *a: jnp.sum(rule.fn(*a)[0]), argnums=tuple(range(len(args))))(*args)
  assert {leaf.dtype for leaf in jax.tree.leaves(out)} == {np.dtype(dtype)}
  assert [g.dtype for g in grads] == [np.dtype(a.dtype) for a in args]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _planted(pred, target, reduction):
  return ops.squared_error(pred, target, reduction)


def _fwd(pred, target, reduction):
  return ops.squared_error(pred, target, reduction), (pred, target)


def _bwd(reduction, res, g):
  pred, target = res
  dpred, dtarget = jax.vjp(lambda p, t: ops.squared_error(p, t, reduction), pred, target)[1](g)
  return dpred.astype(target.dtype), dtarget  # planted: the prediction's gradient in the target's dtype


_planted.defvjp(_fwd, _bwd)


def _squared_error_in_target_dtype(pred, target, reduction="mean"):
  return _planted(pred, target, reduction)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_in_the_other_inputs_dtype_fails(dtype):
  """squared_error's mixed branch: pred one precision below target. JAX casts nothing here, so the
  planted float32 (float64) gradient of a bfloat16 (float32) prediction reaches the checker."""
  rule = REGISTRY["squared_error"]
  args, kwargs = _mixed_branch(rule)(np.random.default_rng(0), dtype)
  with jax.enable_x64(dtype == np.float64):
    check_vjp(rule.fn, rule.reference, *args, kwargs=kwargs)
    grads = jax.grad(lambda p, t: rule.fn(p, t, **kwargs), argnums=(0, 1))(*args)
    assert [g.dtype for g in grads] == [a.dtype for a in args]
    with pytest.raises(AssertionError) as excinfo:
      check_vjp(_squared_error_in_target_dtype, rule.reference, *args, kwargs=kwargs)
  bad = [e for e in excinfo.value.report.failures if e.check == "vjp"]
  assert [e.input for e in bad] == ["input 'pred' (args[0])"]
  assert "(the primal's dtype)" in bad[0].detail
