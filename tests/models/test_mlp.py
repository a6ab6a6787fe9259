"""The MLP: initialisation by name, every option on the manual rules equal to autodiff of the references,
batch-norm running statistics in the state pytree, residuals and dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.models import MLPConfig
from jaxbp.models import init_mlp
from jaxbp.models import mlp_apply
from jaxbp.models._registry import DataSpec
from jaxbp.models.mlp import MLP
from jaxbp.models.mlp import network
import jaxbp.ops


def _batch(n=16, d=6, classes=3, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, classes)


def test_init_he_and_xavier_scales():
  params, state = init_mlp(jax.random.key(0), MLPConfig((400, 300, 10), init="he"))
  assert state == {}
  chex.assert_shape([params["layers"][0]["w"], params["layers"][1]["w"]], [(400, 300), (300, 10)])
  assert abs(float(params["layers"][0]["w"].std()) - np.sqrt(2 / 400)) < 0.01 * np.sqrt(2 / 400) * 5
  chex.assert_trees_all_equal(params["layers"][0]["b"], jnp.zeros(300))
  params, _ = init_mlp(jax.random.key(0), MLPConfig((400, 300, 10), init="xavier"))
  limit = np.sqrt(6 / 700)
  w = params["layers"][0]["w"]
  assert float(jnp.abs(w).max()) <= limit and float(jnp.abs(w).max()) > 0.95 * limit


OPTIONS = [dict(activation="leaky_relu"), dict(activation="elu", dropout=0.3),
           dict(activation="sigmoid", residual=True),
           dict(batch_norm=True), dict(residual=True, batch_norm=True, dropout=0.2, activation="tanh")]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_manual_rules_equal_autodiff_of_references(options):
  config = MLPConfig((6, 8, 8, 3), **options)
  params, state = init_mlp(jax.random.key(1), config)
  x, y = _batch()

  def loss(ops):
    def f(p):
      logits, new_state = mlp_apply(p, x, config, state=state, train=True, key=jax.random.key(2), ops=ops)
      return ops.softmax_cross_entropy(logits, y), new_state
    return jax.jit(jax.value_and_grad(f, has_aux=True))

  (l_manual, s_manual), g_manual = loss(jaxbp.ops)(params)
  (l_ref, s_ref), g_ref = loss(jaxbp.ops.reference)(params)
  chex.assert_trees_all_close(l_manual, l_ref, rtol=1e-5)
  chex.assert_trees_all_close(g_manual, g_ref, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s_manual, s_ref, rtol=1e-5)
  chex.assert_tree_all_finite(g_manual)


def test_batch_norm_running_statistics_live_in_state():
  config = MLPConfig((6, 5, 3), batch_norm=True, bn_momentum=0.9)
  params, state = init_mlp(jax.random.key(0), config)
  x, _ = _batch()
  _, new_state = mlp_apply(params, x, config, state=state, train=True)
  assert "b" not in params["layers"][0] and "b" in params["layers"][1]
  z = x @ params["layers"][0]["w"]
  chex.assert_trees_all_close(new_state["layers"][0]["mean"], 0.1 * z.mean(0), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(new_state["layers"][0]["var"], 0.9 + 0.1 * z.var(0), rtol=1e-5)
  # evaluation uses the running statistics, does not change them, and is per-example (batch-independent)
  out, same = mlp_apply(params, x, config, state=new_state)
  chex.assert_trees_all_equal(same, new_state)
  out_one, _ = mlp_apply(params, x[:1], config, state=new_state)
  chex.assert_trees_all_close(out[:1], out_one, rtol=1e-5)
  with pytest.raises(ValueError, match="'state'"):
    mlp_apply(params, x, config)


def test_residual_adds_the_layer_input_where_widths_agree():
  base = MLPConfig((6, 8, 8, 3), activation="tanh")
  params, _ = init_mlp(jax.random.key(0), base)
  x, _ = _batch()
  h1 = jnp.tanh(x @ params["layers"][0]["w"])  # 6 -> 8: widths differ, no residual
  h2 = h1 + jnp.tanh(h1 @ params["layers"][1]["w"])  # 8 -> 8: residual
  out, _ = mlp_apply(params, x, base._replace(residual=True))
  chex.assert_trees_all_close(out, h2 @ params["layers"][2]["w"], rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training_and_keyed():
  config = MLPConfig((6, 64, 3), dropout=0.5)
  params, _ = init_mlp(jax.random.key(0), config)
  x, _ = _batch()
  k1, k2 = jax.random.split(jax.random.key(3))
  apply = jax.jit(mlp_apply, static_argnums=2, static_argnames="train")
  a, _ = apply(params, x, config, train=True, key=k1)
  b, _ = apply(params, x, config, train=True, key=k1)
  c, _ = apply(params, x, config, train=True, key=k2)
  e1, _ = apply(params, x, config)
  e2, _ = apply(params, x, config._replace(dropout=0.0))
  chex.assert_trees_all_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, e1)
  chex.assert_trees_all_equal(e1, e2)
  with pytest.raises(ValueError, match="'key'"):
    mlp_apply(params, x, config, train=True)


@pytest.mark.parametrize("field,value,fragment", [
    ("sizes", (6,), "at least two"), ("activation", "gelu", "activation"), ("init", "orthogonal", "init"),
    ("dropout", 1.0, "dropout"), ("sizes", (6, True), "at least two"), ("bn_momentum", 1.5, "bn_momentum")])
def test_bad_config_names_the_field(field, value, fragment):
  config = MLPConfig((6, 3))._replace(**{field: value})
  with pytest.raises(ValueError, match=fragment):
    init_mlp(jax.random.key(0), config)


def test_numpy_integer_sizes_are_accepted():
  params, _ = init_mlp(jax.random.key(0), MLPConfig((np.int64(6), np.int32(3))))
  assert params["layers"][0]["w"].shape == (6, 3)


def test_wrong_input_width_is_reported():
  config = MLPConfig((6, 3))
  params, _ = init_mlp(jax.random.key(0), config)
  with pytest.raises(ValueError, match=r"x must have shape \[N, 6\], got \(2, 5\)"):
    mlp_apply(params, jnp.zeros((2, 5)), config)


def test_the_mlp_family_passes_every_field_to_its_network_by_name():
  # MLP is MLPConfig with `hidden` for `sizes`: a field added to one and not the other, or passed on in the
  # wrong place, would silently build a different network (issue 8: bn_momentum and bn_eps were dropped).
  assert MLP._fields == ("hidden", *MLPConfig._fields[1:])
  config = MLP(hidden=(7,), activation="tanh", init="xavier", residual=True, batch_norm=True, dropout=0.3,
               bn_momentum=0.5, bn_eps=1e-3)
  net = network(config, DataSpec("features", (4,), 3))
  assert net == MLPConfig((4, 7, 3), "tanh", "xavier", True, True, 0.3, 0.5, 1e-3)
