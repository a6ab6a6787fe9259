"""The node-by-node backprop trace: note 001's upstream, local and downstream gradients, for any function.

``trace(f, **inputs)`` turns ``f`` into its jaxpr, runs the forward pass one equation at a time, then
walks the equations backwards as note 001's flat code does: each node receives its *upstream* gradient
∂L/∂z (the sum over every node that read z), multiplies it by its *local* gradient ∂z/∂x and sends the
*downstream* gradient ∂L/∂x = (∂z/∂x)ᵀ·∂L/∂z to each input. A jaxbp op is one ``custom_vjp_call``
equation, so its node's downstream gradients come from its hand-written backward rule; plain ``jnp``
arithmetic shows up as JAX primitives (``sub``, ``integer_pow``) with JAX's own rules.

Example::

  t = jaxbp.trace(lambda w0, x0, w1, x1, w2: ops.sigmoid(w0 * x0 + w1 * x1 + w2),
                  w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
  print(t.table())        # one row per node and input, in execution order
  t.grads["w0"]           # -0.1966..., equal to jax.grad's
  t.draw("circuit.png")   # the graph, forward values on the edges, gradients in red
"""

from collections.abc import Callable
import os
import re
from typing import Any, NamedTuple
import warnings

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

# Equations that only wrap a sub-jaxpr; their body is traced node by node when it holds a jaxbp op.
_CALLS = ("jit", "pjit", "closed_call", "core_call")
# A local Jacobian is computed (one VJP per output element) when the node's output is this small.
_MAX_JACOBIAN_ROWS = 64
# The labels the trace gives values; an input by one of these names would be mistaken for them.
_RESERVED = re.compile(r"L|[sc]\d+")


class Node(NamedTuple):
  """One node of the computational graph, with the three gradients of note 001.

  Attributes:
    name: its label in tables and drawings: its outputs joined by ", ".
    outputs: the names of the values it computes: ``s0``, ``s1``, … in execution order (``s0.0``,
      ``s0.1`` for a node with several outputs), ``L`` for the output.
    op: the jaxbp op (``multiply``, ``sigmoid``) or, for plain jnp arithmetic, the JAX primitive.
    manual: True when the backward is a hand-written ``custom_vjp`` rule.
    inputs: the names of the values it reads: inputs, earlier nodes, or constants written out.
    value: its forward value z.
    upstream: ∂L/∂z, the gradient arriving from the nodes that read z (1 for L itself); None when
      L does not depend on z.
    local: per input, the local Jacobian ∂z/∂x of shape ``z.shape + x.shape`` (a number when both are
      scalars); None for an input without a gradient or when z has more than 64 elements.
    downstream: per input, ∂L/∂x = (∂z/∂x)ᵀ·∂L/∂z, the gradient the node sends back; None for an input
      without a gradient (integer labels, PRNG keys).
    args: the values of its inputs, constants included, in the order of ``inputs``.
    fn: the node as a function of ``args`` returning the list of its outputs: the rule itself (with
      its hand-written backward) for a manual node.
    plain: for a manual node, the rule's forward code as plain jnp (its backward then is autodiff's);
      None for a JAX primitive.
  """
  name: str
  outputs: tuple
  op: str
  manual: bool
  inputs: tuple
  value: Any
  upstream: Any
  local: tuple
  downstream: tuple
  args: tuple = ()
  fn: Any = None
  plain: Any = None


class Trace(NamedTuple):
  """The trace of one scalar function at one point.

  Attributes:
    inputs: the named inputs, as arrays, in the order given.
    nodes: every node in execution order.
    output: the value of L.
    grads: ∂L/∂input for every input, accumulated from the downstream gradients of the nodes.
    autodiff: ``jax.grad`` of the same function at the same point, for comparison.
  """
  inputs: dict
  nodes: tuple
  output: Any
  grads: dict
  autodiff: dict

  def __str__(self) -> str:
    return self.table()

  def values(self) -> dict:
    """{name: value} of every input and of every node's output(s): what the graph writes on its wires."""
    values = dict(self.inputs)
    for node in self.nodes:
      values.update(zip(node.outputs, node.value if len(node.outputs) > 1 else (node.value,)))
    return values

  def table(self, decimals: int = 4, full: bool = False) -> str:
    """The nodes as a plain-text table, one row per node and input; then the inputs' gradients.

    Arrays of more than two elements and local Jacobians of arrays show as shape and norm unless
    ``full`` (see ``jaxbp.insight.tables.trace_table``)."""
    from jaxbp.insight import tables
    return tables.trace_table(self, decimals, full=full)

  def markdown(self, decimals: int = 4, full: bool = False) -> str:
    """The same tables in GitHub Markdown."""
    from jaxbp.insight import tables
    return tables.trace_table(self, decimals, markdown=True, full=full)

  def _repr_html_(self) -> str:
    """What Jupyter shows: the graph with its gradients, and the tables."""
    from jaxbp.insight import html
    return html.static_html(self)

  def to_dot(self, decimals: int = 2) -> str:
    """The graph in Graphviz's DOT language (``dot -Tpng``); see ``jaxbp.insight.draw.to_dot``."""
    from jaxbp.insight import draw
    return draw.to_dot(self, decimals)

  def to_html(self, title: str = "", decimals: int = 2, check: bool = True) -> str:
    """One self-contained HTML page that steps through the backward pass; see ``jaxbp.insight.html``.

    A function of arrays gets the tensor page (``jaxbp.insight.tensor_page``): shapes, values, each
    rule's VJP formula and residual bytes, and, unless ``check`` is False, a ``check_vjp`` badge per rule."""
    from jaxbp.insight import html
    return html.to_html(self, title, decimals, check=check)

  def draw(self, path: str | os.PathLike | None = None, decimals: int = 2, title: str = "") -> Any:
    """Draws the graph to ``path`` (``.png`` or ``.svg``) with matplotlib and returns the path; without
    a path, returns the matplotlib ``Figure`` (a notebook shows it). See ``jaxbp.insight.draw``."""
    from jaxbp.insight import draw
    return draw.draw_trace(self, path, decimals, title)


class _Step(NamedTuple):
  primitive: Any
  params: dict
  op: str
  manual: bool
  invars: tuple   # outer-level keys (Var) or Literal objects
  outvars: tuple  # Var objects


def trace(f: Callable[..., Any], /, **inputs: ArrayLike) -> Trace:
  """Runs the scalar function ``f(**inputs)`` and records its backward pass node by node.

  Args:
    f: a function of keyword arguments returning a scalar L, built from ``jaxbp.ops`` and jnp.
    **inputs: the point at which to trace: numbers or arrays, one per argument of ``f``.

  Returns:
    A ``Trace``. Its ``grads`` equal ``jax.grad`` of ``f`` (also stored, as ``autodiff``); a
    RuntimeWarning names any input where they do not (rtol 1e-4), which would be a bug of the trace.

  Raises:
    ValueError: if ``f`` does not return a scalar floating-point value, or an input is named like a
      node label (``L``, ``s0``, ``c0``, …).
  """
  reserved = [name for name in inputs if _RESERVED.fullmatch(name)]
  if reserved:
    raise ValueError(f"trace: input name(s) {', '.join(reserved)} would read as node labels "
                     "(L is the output, s0, s1, … the nodes, c0, c1, … the constants); rename them")
  names = tuple(inputs)
  args = tuple(jnp.asarray(v) for v in inputs.values())
  fn = lambda *a: f(**dict(zip(names, a)))
  closed, out = jax.make_jaxpr(fn, return_shape=True)(*args)
  if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()
          and jnp.issubdtype(out.dtype, jnp.inexact)):
    got = jax.tree.map(lambda o: f"{o.dtype}{list(o.shape)}", out)
    raise ValueError(f"trace: f must return one scalar float (the loss L), got {got}")
  graph = _Graph(closed, names, args)
  return graph.build(f, names, args)


def grad_by_name(f: Callable[..., Any], /, **inputs: ArrayLike) -> dict[str, jax.Array]:
  """``jax.grad`` of the scalar ``f(**inputs)`` with respect to every floating-point input.

  Returns:
    {name: ∂L/∂name} for the float inputs, in the order given; {} when there is none (integer labels,
    PRNG keys and a function of constants only have nothing to differentiate).
  """
  args = {name: jnp.asarray(v) for name, v in inputs.items()}
  floats = [name for name, a in args.items() if jnp.issubdtype(a.dtype, jnp.inexact)]
  if not floats:
    return {}
  by_position = lambda *xs: f(**{**args, **dict(zip(floats, xs))})
  # jitted: one compiled program, not one per primitive (a model's step has hundreds)
  return dict(zip(floats, jax.jit(jax.grad(by_position, argnums=tuple(range(len(floats)))))(
      *(args[name] for name in floats))))


class _Graph:
  """The flattened equations of a jaxpr with their forward values, and the backward sweep over them."""

  def __init__(self, closed, names, args):
    jaxpr = closed.jaxpr
    self.values, self.alias, self.steps, self.labels, self.n_consts = {}, {}, [], {}, 0
    self._add_consts(jaxpr.constvars, closed.consts)
    for var, name, val in zip(jaxpr.invars, names, args):
      self.values[var], self.labels[var] = val, name
    self.invars = jaxpr.invars
    self._walk(jaxpr, top=True)
    self.outvar = self.key(jaxpr.outvars[0])

  def _add_consts(self, constvars, consts):
    """Records closed-over constants as c0, c1, … numbered across the function and its calls."""
    for var, val in zip(constvars, consts):
      self.values[var], self.labels[var] = jnp.asarray(val), f"c{self.n_consts}"
      self.n_consts += 1

  def key(self, atom):
    while not _is_literal(atom) and atom in self.alias:
      atom = self.alias[atom]
    return atom

  def read(self, atom):
    atom = self.key(atom)
    return atom.val if _is_literal(atom) else self.values[atom]

  def _walk(self, jaxpr, top=False):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in _CALLS and (_holds_rule(eqn) or (top and len(jaxpr.eqns) == 1)):
        self._inline(eqn)
        continue
      op, manual = _label(eqn)
      step = _Step(eqn.primitive, eqn.params, op, manual,
                   tuple(self.key(v) for v in eqn.invars), tuple(eqn.outvars))
      outs = _bind(step)(*[self.read(v) for v in step.invars])
      for var, val in zip(step.outvars, outs):
        self.values[var] = val
      self.steps.append(step)

  def _inline(self, eqn):
    inner = eqn.params["jaxpr"]
    self._add_consts(inner.jaxpr.constvars, inner.consts)
    for inner_var, outer in zip(inner.jaxpr.invars, eqn.invars):
      self.alias[inner_var] = self.key(outer)
    self._walk(inner.jaxpr)
    for outer, inner_var in zip(eqn.outvars, inner.jaxpr.outvars):
      self.alias[outer] = self.key(inner_var)

  def build(self, f, names, args):
    grads = {self.outvar: jnp.ones((), self.values[self.outvar].dtype)} if not _is_literal(
        self.outvar) else {}
    records = [self._backward(step, grads) for step in reversed(self.steps)][::-1]
    nodes = self._nodes(records)
    trace_grads = {name: grads.get(var, jnp.zeros_like(val))
                   for var, name, val in zip(self.invars, names, args)}
    autodiff = grad_by_name(f, **dict(zip(names, args)))
    grads = {n: trace_grads[n] for n in autodiff}
    _warn_if_grads_differ(grads, autodiff)
    return Trace(dict(zip(names, args)), nodes, self.read(self.outvar), grads, autodiff)

  def _backward(self, step, grads):
    """Sends ∂L/∂z of ``step``'s outputs back to its inputs; returns (upstream, local, downstream)."""
    outs = [self.values[v] for v in step.outvars]
    upstream = [grads.get(v) for v in step.outvars]
    diff = [i for i, v in enumerate(step.invars) if _is_float(self.read(v))]
    n_in = len(step.invars)
    if all(u is None for u in upstream) or not diff or not any(_is_float(o) for o in outs):
      return _single(upstream), (None,) * n_in, (None,) * n_in
    invals = [self.read(v) for v in step.invars]

    def partial(*xs):
      vals = list(invals)
      for i, x in zip(diff, xs):
        vals[i] = x
      return _bind(step)(*vals)

    _, vjp = jax.vjp(partial, *[invals[i] for i in diff])
    ct = [u if u is not None else _zero_cotangent(o) for u, o in zip(upstream, outs)]
    down = vjp(ct)
    local = _local_jacobian(vjp, outs[0], len(diff)) if len(outs) == 1 else [None] * len(diff)
    downstream, locals_ = [None] * n_in, [None] * n_in
    for i, d, j in zip(diff, down, local):
      downstream[i], locals_[i] = d, j
      var = step.invars[i]
      if not _is_literal(var):
        grads[var] = d if var not in grads else grads[var] + d
    return _single(upstream), tuple(locals_), tuple(downstream)

  def _nodes(self, records):
    nodes = []
    for k, (step, (up, local, down)) in enumerate(zip(self.steps, records)):
      for j, var in enumerate(step.outvars):
        if var is self.outvar:
          self.labels[var] = "L"
        elif var not in self.labels:
          self.labels[var] = f"s{k}" if len(step.outvars) == 1 else f"s{k}.{j}"
      value = _single([self.values[v] for v in step.outvars])
      outputs = tuple(self.labels[v] for v in step.outvars)
      nodes.append(Node(", ".join(outputs), outputs, step.op, step.manual,
                        tuple(self.label(v) for v in step.invars), value, up, local, down,
                        tuple(self.read(v) for v in step.invars), _bind(step), _plain(step)))
    return tuple(nodes)

  def label(self, atom):
    atom = self.key(atom)
    if _is_literal(atom):
      return _literal_text(atom.val)
    return self.labels.get(atom, "?")


def _warn_if_grads_differ(grads, autodiff):
  """Warns when the node-by-node gradients disagree with jax.grad: a bug in the trace, never silent.

  A warning rather than an error, so the trace that shows where the two part stays in hand.
  """
  for name, auto in autodiff.items():
    auto = np.asarray(auto, np.float64)
    scale = float(np.max(np.abs(auto), initial=0.0, where=np.isfinite(auto)))
    if not np.allclose(np.asarray(grads[name], np.float64), auto, rtol=1e-4, atol=1e-6 * (1 + scale),
                       equal_nan=True):  # NaN from both (log(x - x)) is agreement
      warnings.warn(f"trace: ∂L/∂{name} from the nodes differs from jax.grad's "
                    f"(the trace is wrong here; see Trace.autodiff)", RuntimeWarning, stacklevel=3)


def _is_literal(atom):
  return isinstance(atom, jax.extend.core.Literal)


def _is_float(x):
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _zero_cotangent(x):
  """The cotangent of an output L does not read: zeros, or float0 zeros for an integer output."""
  return jnp.zeros_like(x) if _is_float(x) else np.zeros(np.shape(x), jax.dtypes.float0)


def _single(xs):
  return xs[0] if len(xs) == 1 else tuple(xs)


def _literal_text(val):
  arr = np.asarray(val)
  return f"{arr.item():g}" if arr.size == 1 else f"const{list(arr.shape)}"


def _holds_rule(eqn):
  """Whether a call equation holds a custom_vjp op anywhere inside it."""
  for sub in jax.extend.core.jaxprs_in_params(eqn.params):
    for inner in sub.eqns:
      if inner.primitive.name.startswith("custom_vjp") or (
          inner.primitive.name in _CALLS and _holds_rule(inner)):
        return True
  return False


def _label(eqn):
  """(op name, manual) for an equation: the jaxbp op's name for a custom_vjp call."""
  name = eqn.primitive.name
  if name.startswith("custom_vjp"):
    func = eqn.params["call_jaxpr"].jaxpr.debug_info.func_name
    return func.split(" ")[0].lstrip("_"), True
  if name.startswith("custom_jvp") or name in _CALLS:
    sub = eqn.params.get("call_jaxpr") or eqn.params.get("jaxpr")
    debug = getattr(getattr(sub, "jaxpr", sub), "debug_info", None)
    return eqn.params.get("name") or (debug.func_name if debug else name), False
  return name, False


def _bind(step):
  """The equation as a function of its input values, returning the list of its outputs."""
  params = step.primitive.get_bind_params(step.params)

  def fn(*vals):
    out = step.primitive.bind(*vals, **params)
    return list(out) if step.primitive.multiple_results else [out]

  return fn


def _plain(step):
  """A custom_vjp equation's forward as a function of its inputs with no rule attached (None otherwise)."""
  closed = step.params.get("call_jaxpr") if step.manual else None
  if closed is None:
    return None
  return jax.extend.core.jaxpr_as_fun(closed)


def _local_jacobian(vjp, z, n_inputs):
  """∂z/∂x for each differentiated input, one VJP per element of z (the rule's own backward)."""
  if z.size > _MAX_JACOBIAN_ROWS:
    return [None] * n_inputs
  basis = jnp.eye(z.size, dtype=z.dtype).reshape((z.size,) + z.shape)
  rows = jax.vmap(lambda e: vjp([e]))(basis)
  return [r.reshape(z.shape + r.shape[1:]) for r in rows]
