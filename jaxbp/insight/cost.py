"""FLOP and memory accounting, measured by XLA on the compiled program.

Note 003 states the cost of backpropagation for a network with P parameters on D samples:

  forward  ≈ 2·P·D FLOPs   (one multiply and one add per weight per sample),
  backward ≈ 4·P·D FLOPs   (the same again twice: dX = dY·Wᵀ and dW = Xᵀ·dY, note 001),

so a training step costs about 6·P·D and backward/forward ≈ 2. This module checks that claim against
what XLA actually compiles: ``compiled_cost`` reads the compiled executable's ``cost_analysis()``
(FLOPs, bytes accessed) and ``memory_analysis()`` (temporary buffers), and ``backprop_cost`` splits a
loss function's FLOPs into forward and backward.

XLA drops work whose result is unused. A network's first layer needs no input gradient dX, so for a
matmul-dominated network XLA counts backward/forward below 2 (about 1.72 for a 784-2048-2048-10 MLP);
``backprop_cost(..., wrt_input=True)`` also asks for the gradient of the input and recovers the notes'
2.0.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np


class Cost(NamedTuple):
  """What XLA says about one compiled program.

  Attributes:
    flops: floating-point operations per call, from ``cost_analysis()["flops"]`` (a multiply-add
      counts 2; element-wise ops count too).
    bytes_accessed: bytes read and written per call, from ``cost_analysis()``.
    temp_bytes: temporary buffer bytes (intermediates, not arguments or outputs), from
      ``memory_analysis().temp_size_in_bytes``.
    argument_bytes: bytes of the arguments.
    output_bytes: bytes of the outputs.
  """
  flops: float
  bytes_accessed: float
  temp_bytes: int
  argument_bytes: int
  output_bytes: int


class BackpropCost(NamedTuple):
  """Forward and backward FLOPs of one loss function on one batch (note 003's claim, measured).

  Attributes:
    forward_flops: XLA FLOPs of ``loss_fn(params, *batch)`` alone.
    backward_flops: XLA FLOPs of ``value_and_grad`` minus ``forward_flops``.
    ratio: ``backward_flops / forward_flops``; the notes predict about 2 for matmul-bound networks.
    params: P, the number of parameter scalars.
    samples: D, the batch size (leading axis of the first batch argument).
    six_pd: the notes' 6·P·D for the whole step (forward 2·P·D plus backward 4·P·D).
  """
  forward_flops: float
  backward_flops: float
  ratio: float
  params: int
  samples: int
  six_pd: float


def compile_fn(fn: Callable[..., Any], *args: Any, **jit_kwargs: Any) -> jax.stages.Compiled:
  """Lowers and compiles ``jax.jit(fn, **jit_kwargs)`` for ``args``; returns the compiled executable."""
  return jax.jit(fn, **jit_kwargs).lower(*args).compile()


def _first(analysis):
  # Older jaxlibs return a list with one dict per computation; newer ones return the dict.
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis or {}


def compiled_cost(fn: Callable[..., Any] | None, *args: Any, compiled: jax.stages.Compiled | None = None,
                  **jit_kwargs: Any) -> Cost:
  """FLOPs, bytes and temporary memory of ``fn(*args)`` as XLA compiles it for the default backend.

  Args:
    fn: any jittable function (may be ``None`` when ``compiled`` is given).
    *args: example arguments (arrays or pytrees); only shapes and dtypes matter.
    compiled: an already compiled executable (``jax.jit(f).lower(...).compile()``) to read instead
      of compiling ``fn`` again.
    **jit_kwargs: passed to ``jax.jit`` (e.g. ``donate_argnums``).

  Returns:
    A ``Cost``. Fields XLA does not report on this backend are 0.
  """
  if compiled is None:
    if fn is None:
      raise TypeError("compiled_cost: give a function 'fn' or an executable 'compiled'")
    compiled = compile_fn(fn, *args, **jit_kwargs)
  costs = _first(compiled.cost_analysis())
  memory = compiled.memory_analysis()

  def read(name):
    return int(getattr(memory, name, 0) or 0)
  return Cost(
      flops=float(costs.get("flops", 0.0)),
      bytes_accessed=float(costs.get("bytes accessed", 0.0)),
      temp_bytes=read("temp_size_in_bytes"),
      argument_bytes=read("argument_size_in_bytes"),
      output_bytes=read("output_size_in_bytes"))


def flops(fn: Callable[..., Any], *args: Any) -> float:
  """XLA's FLOP count of one call ``fn(*args)``; e.g. ``2·N·D·M`` for an ``[N, D] @ [D, M]`` matmul."""
  return compiled_cost(fn, *args).flops


def temp_bytes(fn: Callable[..., Any], *args: Any) -> int:
  """Bytes of temporary buffers XLA allocates for one call ``fn(*args)``: intermediates, not the
  arguments or outputs (for a gradient, e.g. the activations its backward reads); ``Cost.temp_bytes``."""
  return compiled_cost(fn, *args).temp_bytes


def param_count(params: Any) -> int:
  """P: the number of scalars in every array leaf of ``params``."""
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def six_pd(params: Any, samples: int) -> float:
  """The notes' FLOPs of one training step: 2·P·D forward plus 4·P·D backward."""
  return 6.0 * param_count(params) * samples


def backprop_cost(loss_fn: Callable[..., Any], params: Any, *batch: Any, wrt_input: bool = False) -> BackpropCost:
  """Forward and backward FLOPs of ``loss_fn(params, *batch)``, counted by XLA.

  The forward is ``loss_fn`` compiled alone; the backward is what ``jax.value_and_grad`` adds on top
  (for ``jaxbp.ops`` that is the hand-written rules, for plain jnp what JAX derives).

  Args:
    loss_fn: ``loss_fn(params, *batch) -> scalar``.
    params: the parameter pytree.
    *batch: the batch arguments, the input first (e.g. ``x [N, D], labels [N]``).
    wrt_input: also differentiate with respect to ``batch[0]``, so the first layer's input gradient
      is computed rather than dropped as unused; the notes' count includes it.

  Returns:
    A ``BackpropCost`` with both counts, their ratio, P, D and 6·P·D.
  """
  if not batch:
    raise ValueError("backprop_cost: pass at least one batch argument (the input) after params")
  if wrt_input:
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1))
  else:
    grad_fn = jax.value_and_grad(loss_fn)
  forward = flops(loss_fn, params, *batch)
  total = flops(grad_fn, params, *batch)
  backward = total - forward
  samples = int(np.shape(batch[0])[0]) if np.ndim(batch[0]) else 1
  return BackpropCost(
      forward_flops=forward,
      backward_flops=backward,
      ratio=backward / forward if forward else float("nan"),
      params=param_count(params),
      samples=samples,
      six_pd=six_pd(params, samples))
