"""softplus, gelu, silu: stability at large |x|, both gelu forms, bad input."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxbp import ops


def test_softplus_is_finite_and_exact_for_large_inputs():
  x = jnp.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
  y = ops.softplus(x)
  chex.assert_tree_all_finite(y)
  assert float(y[-1]) == 1000.0 and float(y[0]) == 0.0
  assert float(y[2]) == pytest.approx(float(jnp.log(2.0)))
  chex.assert_trees_all_close(jax.grad(lambda x: jnp.sum(ops.softplus(x)))(x), jax.nn.sigmoid(x))


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_both_forms_match_jax(approximate):
  x = jnp.linspace(-5.0, 5.0, 11)
  chex.assert_trees_all_close(ops.gelu(x, approximate), jax.nn.gelu(x, approximate=approximate), atol=1e-6)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x)))(x)
  chex.assert_trees_all_close(grad(lambda x: ops.gelu(x, approximate)),
                              grad(lambda x: jax.nn.gelu(x, approximate=approximate)), atol=1e-6)


def test_gelu_default_is_exact_and_silu_derivative():
  assert float(ops.gelu(1.0)) == pytest.approx(float(jax.nn.gelu(1.0, approximate=False)))
  assert float(ops.gelu(1.0)) != pytest.approx(float(jax.nn.gelu(1.0, approximate=True)), abs=1e-6)
  s = jax.nn.sigmoid(2.0)
  assert float(jax.grad(ops.silu)(2.0)) == pytest.approx(float(s * (1 + 2.0 * (1 - s))))


def test_smooth_rules_reject_bad_arguments():
  with pytest.raises(TypeError, match=r"gelu: argument 'approximate' must be a Python bool"):
    ops.gelu(jnp.ones(2), approximate="tanh")
  for name in ("softplus", "gelu", "silu"):
    with pytest.raises(TypeError, match=rf"{name}: argument 'x' must be a floating-point array"):
      getattr(ops, name)(jnp.arange(3))
