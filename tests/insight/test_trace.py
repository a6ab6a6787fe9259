"""jaxbp.trace: the node-by-node backward pass equals jax.grad, and uses the ops' own rules."""

import functools
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.insight.draw import layout
from jaxbp.insight.draw import loss_node
from jaxbp.insight.trace import trace
import jaxbp.ops as ops

CIRCUIT = dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)


def circuit(w0, x0, w1, x1, w2):
  return ops.sigmoid(ops.add(ops.add(ops.multiply(w0, x0), ops.multiply(w1, x1)), w2))


def circuit_plain(w0, x0, w1, x1, w2):
  return 1.0 / (1.0 + jnp.exp(-(w0 * x0 + w1 * x1 + w2)))


def _assert_chain_rule(t):
  """Every node's downstream gradient is its local Jacobian, transposed, times its upstream one."""
  for node in t.nodes:
    for local, down in zip(node.local, node.downstream):
      if local is None or down is None:
        continue
      z_axes = np.ndim(node.value)
      expect = np.tensordot(np.asarray(node.upstream), np.asarray(local), axes=z_axes)
      np.testing.assert_allclose(down, expect, rtol=1e-5, atol=1e-6)


def test_circuit_nodes_and_gradients_match_note_001():
  t = trace(circuit, **CIRCUIT)
  assert [n.op for n in t.nodes] == ["multiply", "multiply", "add", "add", "sigmoid"]
  assert [n.name for n in t.nodes] == ["s0", "s1", "s2", "s3", "L"]
  assert all(n.manual for n in t.nodes)
  expect = jax.grad(circuit_plain, argnums=range(5))(*CIRCUIT.values())
  for name, g in zip(CIRCUIT, expect):
    np.testing.assert_allclose(t.grads[name], g, rtol=1e-6)
  np.testing.assert_allclose([t.grads[n] for n in CIRCUIT], [-0.20, 0.39, -0.39, -0.59, 0.20],
                             atol=0.005)
  # the sigmoid's local gradient is σ(1)(1 − σ(1)) and every node upstream of it receives it
  s = 1 / (1 + np.exp(-1.0))
  np.testing.assert_allclose(t.nodes[-1].local[0], s * (1 - s), rtol=1e-6)
  for node in t.nodes[:-1]:
    np.testing.assert_allclose(node.upstream, s * (1 - s), rtol=1e-6)
  _assert_chain_rule(t)


def test_trace_uses_the_ops_backward_rule_not_autodiff():
  @jax.custom_vjp
  def triple_grad_square(x):
    return x * x

  triple_grad_square.defvjp(lambda x: (x * x, x), lambda x, g: (3.0 * 2.0 * x * g,))
  t = trace(lambda x: ops.add(triple_grad_square(x), 1.0), x=2.0)
  assert t.nodes[0].op == "triple_grad_square" and t.nodes[0].manual
  np.testing.assert_allclose(t.grads["x"], 12.0)  # the (wrong) rule's 3·2x, not autodiff's 2x = 4
  np.testing.assert_allclose(t.autodiff["x"], 12.0)


def test_fan_out_sums_the_gradients_of_every_reader():
  t = trace(lambda x, y: ops.add(ops.multiply(x, x), ops.multiply(x, y)), x=3.0, y=-2.0)
  np.testing.assert_allclose(t.grads["x"], 2 * 3.0 - 2.0)
  np.testing.assert_allclose(t.grads["y"], 3.0)
  first = t.nodes[0]
  assert first.inputs == ("x", "x")
  np.testing.assert_allclose(first.downstream, [3.0, 3.0])


def test_small_network_with_integer_labels_matches_jax_grad_of_references():
  rng = np.random.default_rng(0)
  inputs = dict(x=rng.normal(size=(4, 3)).astype(np.float32),
                w=rng.normal(size=(3, 5)).astype(np.float32),
                b=rng.normal(size=(5,)).astype(np.float32),
                labels=np.array([0, 4, 2, 1]))

  def loss(x, w, b, labels, o=ops):
    return o.softmax_cross_entropy(o.relu(o.linear(x, w, b)), labels)

  t = trace(loss, **inputs)
  assert set(t.grads) == {"x", "w", "b"}  # integer labels get no gradient
  ref = functools.partial(loss, o=ops.reference)
  expect = jax.grad(ref, argnums=(0, 1, 2))(*inputs.values())
  chex.assert_trees_all_close(tuple(t.grads[k] for k in "xwb"), expect, rtol=1e-5, atol=1e-6)
  _assert_chain_rule(t)


def test_plain_jnp_and_jit_are_traced_too():
  def f(x, y):
    return jnp.sum(jnp.tanh(ops.matmul(x, y)) ** 2) - jnp.log(jnp.sum(y * y))

  x = jnp.arange(6.0).reshape(2, 3) / 7
  y = jnp.linspace(-1, 1, 6).reshape(3, 2)
  t, tj = trace(f, x=x, y=y), trace(jax.jit(f), x=x, y=y)
  assert [n.op for n in t.nodes] == [n.op for n in tj.nodes]
  assert "matmul" in [n.op for n in t.nodes] and "tanh" in [n.op for n in t.nodes]
  expect = jax.grad(f, argnums=(0, 1))(x, y)
  chex.assert_trees_all_close((t.grads["x"], t.grads["y"]), expect, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close((tj.grads["x"], tj.grads["y"]), expect, rtol=1e-5, atol=1e-6)
  matmul = next(n for n in t.nodes if n.op == "matmul")
  chex.assert_shape(matmul.local[0], (2, 2, 2, 3))
  _assert_chain_rule(t)


def test_a_step_with_an_integer_output_still_passes_its_gradient_back():
  # top_k returns the values (float) and their indices (int32): the values' gradient must flow.
  t = trace(lambda x: jnp.sum(jax.lax.top_k(x, 2)[0] ** 2), x=jnp.array([1.0, 3.0, 2.0]))
  np.testing.assert_allclose(t.grads["x"], [0.0, 6.0, 4.0])
  np.testing.assert_allclose(t.autodiff["x"], [0.0, 6.0, 4.0])


def test_gradients_that_differ_from_autodiff_are_not_silent(monkeypatch):
  trace_module = sys.modules["jaxbp.insight.trace"]
  lost = lambda self, step, grads: (None, (None,) * len(step.invars), (None,) * len(step.invars))
  monkeypatch.setattr(trace_module._Graph, "_backward", lost)  # a backward that drops every gradient
  with pytest.warns(RuntimeWarning, match="∂L/∂x .* differs from jax.grad"):
    trace(lambda x: ops.multiply(x, x), x=3.0)


def test_a_step_with_an_empty_output_has_an_empty_local_jacobian():
  t = trace(lambda x: jnp.sum(x[:0] * 2.0) + jnp.sum(x * x), x=jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(t.grads["x"], [2.0, 4.0])
  empty = next(n for n in t.nodes if n.op == "slice")
  chex.assert_shape(empty.local[0], (0, 2))  # z.shape + x.shape
  _assert_chain_rule(t)


def test_constants_are_numbered_in_order_across_inlined_calls():
  c, d = np.arange(3.0, dtype=np.float32), np.full(3, 2.0, np.float32)
  inner = jax.jit(lambda x: ops.multiply(x, d))  # holds a rule, so traced node by node
  t = trace(lambda x: jnp.sum(inner(ops.multiply(x, c))), x=jnp.ones(3))
  assert [n.inputs for n in t.nodes] == [("x", "c0"), ("s0", "c1"), ("s1",)]


def test_non_scalar_output_is_refused():
  with pytest.raises(ValueError, match="scalar"):
    trace(lambda x: ops.relu(x), x=np.ones(3, np.float32))


@pytest.mark.parametrize("f", [lambda x: (x, x), lambda x: [ops.relu(x)], lambda x: None])
def test_anything_but_one_scalar_output_is_refused_with_the_documented_error(f):
  with pytest.raises(ValueError, match="must return one scalar float"):
    trace(f, x=1.0)


@pytest.mark.parametrize("name", ["L", "s0", "s12", "c0"])
def test_inputs_named_like_node_labels_are_refused(name):
  with pytest.raises(ValueError, match=f"input name\\(s\\) {name} would read as node labels"):
    trace(lambda **kw: ops.multiply(kw[name], kw["x"]), x=2.0, **{name: 3.0})
  trace(lambda **kw: ops.multiply(kw[name + "_"], kw["x"]), x=2.0, **{name + "_": 3.0})


def test_table_and_markdown_show_every_node_and_gradient():
  t = trace(circuit, **CIRCUIT)
  text = t.table(decimals=2)
  for word in ["upstream ∂L/∂z", "local ∂z/∂x", "downstream ∂L/∂x", "sigmoid", "s3"]:
    assert word in text
  grads_block = text.split("L = 0.73")[1]
  for name, g in zip(CIRCUIT, ["-0.20", "0.39", "-0.39", "-0.59", "0.20"]):
    line = next(l for l in grads_block.splitlines() if l.startswith(name + " "))
    assert line.split()[2] == g and line.split()[3] == g
  md = t.markdown(decimals=4)
  rows = [l for l in md.splitlines() if l.startswith("| s") or l.startswith("| L") or
          l.startswith("|  |")]
  assert len(rows) == sum(len(n.inputs) for n in t.nodes)
  assert "-0.1966" in md


def test_draw_writes_png_and_svg(tmp_path):
  t = trace(circuit, **CIRCUIT)
  png, svg = t.draw(tmp_path / "c.png"), t.draw(tmp_path / "c.svg")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
  text = svg.read_text()
  assert "-0.39" in text and "#c0392b" in text  # the gradients, in red
  with pytest.raises(ValueError, match=".png or .svg"):
    t.draw(tmp_path / "c.jpg")


def test_drawing_finds_L_by_name_when_a_later_step_goes_unused():
  def f(x):
    loss = ops.sigmoid(x)
    ops.relu(x)  # computed after L, read by nothing
    return loss

  t = trace(f, x=0.5)
  assert [(n.op, n.outputs) for n in t.nodes] == [("sigmoid", ("L",)), ("relu", ("s1",))]
  assert loss_node(t) is t.nodes[0]
  pos, _ = layout(t)
  assert set(pos) == {"x", "L", "s1"}


def test_drawing_connects_each_output_of_a_node_with_several():
  def f(x):
    a, b = jnp.split(x, 2)
    return jnp.sum(ops.multiply(a, b))

  t = trace(f, x=jnp.arange(4.0))
  split, mul = t.nodes[0], t.nodes[1]
  assert split.outputs == ("s0.0", "s0.1") and mul.inputs == ("s0.0", "s0.1")
  pos, edges = layout(t)
  assert not [p for p in pos if ":" in p]  # no phantom constant for s0.0 or s0.1
  assert (split.name, mul.name, 0) in edges and (split.name, mul.name, 1) in edges
  assert pos[mul.name][0] > pos[split.name][0] > pos["x"][0]
