"""subtract, negative, divide, power, exp, log, sqrt: every branch, the x = 0 choices, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops


def _grad_pair(name, *args):
  """jax.grad (summed output) through the manual rule and through the reference, per float input."""
  argnums = tuple(i for i, a in enumerate(args) if not isinstance(a, (int, float)))
  grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a)), argnums)(*args)
  return grad(getattr(ops, name)), grad(getattr(ops.reference, name))


def test_subtract_sends_minus_g_to_y_summed_over_broadcast_axes():
  dx, dy = jax.grad(lambda x, y: jnp.sum(ops.subtract(x, y) * jnp.arange(6.0).reshape(2, 3)), (0, 1))(
      jnp.ones((2, 3)), jnp.ones(3))
  chex.assert_trees_all_close(dx, jnp.arange(6.0).reshape(2, 3))
  chex.assert_trees_all_close(dy, -jnp.array([3.0, 5.0, 7.0]))
  assert float(jax.grad(ops.negative)(2.0)) == -1.0


def test_divide_gradients_and_division_by_zero():
  dx, dy = jax.grad(ops.divide, (0, 1))(3.0, 2.0)
  assert (float(dx), float(dy)) == (0.5, -0.75)  # 1/y and −x/y²
  got, want = _grad_pair("divide", jnp.array([1.0, 0.0, -1.0]), jnp.array([0.0, 0.0, 0.0]))
  chex.assert_trees_all_equal(got, want)  # ±inf and NaN exactly where jnp's gradient has them


@pytest.mark.parametrize("p", [0, 1, 2, 3, -1, 0.5, 1.5, -0.5, 0.0, 1.0])
def test_power_with_a_python_exponent_at_zero_and_negative_x(p, x64):
  x = jnp.array([-1.5, 0.0, 0.7, 2.0])
  (dx,), (want,) = _grad_pair("power", x, p)
  if p == 0:  # z is the constant 1: dx = 0 everywhere, also at x = 0 (jnp's float 0 gives NaN there)
    chex.assert_trees_all_equal(dx, jnp.zeros(4))
  else:
    chex.assert_trees_all_close(dx, want)  # NaN where x < 0 and p is fractional, in both
  if p == 0.5:
    assert float(dx[1]) == np.inf  # the one-sided derivative's limit


def test_power_integer_exponent_is_defined_for_negative_x():
  assert float(jax.grad(lambda x: ops.power(x, 3))(-2.0)) == 12.0


def test_power_with_an_array_exponent_gives_dp_and_dp_zero_at_x_zero(x64):
  x, p = jnp.array([[0.0, 0.5, 2.0]]), jnp.array([[2.0], [0.0]])
  dx, dp = jax.grad(lambda x, p: jnp.sum(ops.power(x, p)), (0, 1))(x, p)
  want_dx, want_dp = jax.grad(lambda x, p: jnp.sum(jnp.power(x, p)), (0, 1))(x, p)
  chex.assert_trees_all_close(dp, want_dp)
  np.testing.assert_allclose(dp[:, 0], [0.25 * np.log(0.5) + 4 * np.log(2.0), np.log(0.5) + np.log(2.0)])
  assert float(dx[0, 0]) == 0.0  # 2·0 from p = 2, and 0 (not NaN) from the constant 0⁰ = 1
  chex.assert_trees_all_close(dx[0, 1:], want_dx[0, 1:])


def test_exp_log_sqrt_derivatives_and_their_values_at_zero():
  assert float(jax.grad(ops.exp)(1.0)) == pytest.approx(np.e)
  assert float(jax.grad(ops.log)(4.0)) == 0.25
  assert float(jax.grad(ops.sqrt)(4.0)) == 0.25
  for name in ("log", "sqrt"):
    got, want = _grad_pair(name, jnp.array([0.0, -1.0, 2.0]))
    chex.assert_trees_all_equal(got, want)  # inf at 0 and NaN below, as jnp's gradient
  assert float(jax.grad(ops.sqrt)(0.0)) == np.inf


def test_elementwise_rules_reject_bad_arguments():
  with pytest.raises(TypeError, match=r"subtract: argument 'y' must be a floating-point array"):
    ops.subtract(jnp.ones(2), jnp.ones(2, jnp.int32))
  with pytest.raises(ValueError, match=r"divide: shapes do not broadcast together: x \(2,\), y \(3,\)"):
    ops.divide(jnp.ones(2), jnp.ones(3))
  with pytest.raises(TypeError, match=r"power: argument 'p' must be a Python number or a float array"):
    ops.power(jnp.ones(2), "2")
  with pytest.raises(TypeError, match=r"power: argument 'p' must be a floating-point array"):
    ops.power(jnp.ones(2), jnp.ones(2, jnp.int32))
  with pytest.raises(ValueError, match=r"power: shapes do not broadcast together"):
    ops.power(jnp.ones(2), jnp.ones(3))
  for name in ("negative", "exp", "log", "sqrt"):
    with pytest.raises(TypeError, match=rf"{name}: argument 'x' must be a floating-point array"):
      getattr(ops, name)(jnp.arange(3))
