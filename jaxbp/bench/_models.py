"""The benchmarked training steps: one MLP, three ways (manual rules, ``jax.grad``, PyTorch eager).

The model is written once against an op namespace: ``jaxbp.ops`` gives the hand-written rules,
``jaxbp.ops.reference`` the same ops in plain jnp/jax.nn, which ``jax.grad`` differentiates by itself.
A step is forward, backward and a plain SGD update (``w ← w − lr·dw``), jitted, returning the new
parameters.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LEARNING_RATE = 1e-3


class ModelSpec(NamedTuple):
  """One benchmarked MLP: ``sizes = (D_in, H_1, ..., D_out)``, ReLU between layers, trained on ``batch``."""
  name: str
  sizes: tuple
  batch: int

  @property
  def label(self):
    return f"{self.name}: batch {self.batch}, {'-'.join(map(str, self.sizes))}"


def mlp_logits(ops, params, x):
  """Logits ``[N, D_out]`` of the ReLU MLP ``params = [(w [D_in, D_out], b [D_out]), ...]`` on ``x [N, D_in]``."""
  h = x
  for w, b in params[:-1]:
    h = ops.relu(ops.linear(h, w, b))
  w, b = params[-1]
  return ops.linear(h, w, b)


def mlp_loss(ops, params, x, labels):
  """Mean softmax cross-entropy of ``mlp_logits(ops, params, x)`` against integer ``labels [N]``."""
  return ops.softmax_cross_entropy(mlp_logits(ops, params, x), labels)


def make_batch(spec: ModelSpec, dtype=jnp.float32, seed: int = 0):
  """He-initialised parameters, a standard-normal input batch and random labels, as JAX arrays."""
  rng = np.random.default_rng(seed)
  params = []
  for d_in, d_out in zip(spec.sizes[:-1], spec.sizes[1:]):
    w = rng.normal(0.0, np.sqrt(2.0 / d_in), size=(d_in, d_out))
    params.append((jnp.asarray(w, dtype), jnp.zeros((d_out,), dtype)))
  x = jnp.asarray(rng.normal(size=(spec.batch, spec.sizes[0])), dtype)
  labels = jnp.asarray(rng.integers(0, spec.sizes[-1], size=spec.batch), jnp.int32)
  return params, x, labels


def make_step(ops, donate: bool = False):
  """The jitted SGD step ``step(params, x, labels) -> params`` of ``mlp_loss`` on ``ops``."""
  def step(params, x, labels):
    grads = jax.grad(lambda p: mlp_loss(ops, p, x, labels))(params)
    return jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads)
  return jax.jit(step, donate_argnums=(0,) if donate else ())


def jax_block(step, params, x, labels):
  """``block(reps)``: ``reps`` chained steps from the latest parameters, then wait for them."""
  state = {"params": jax.tree_util.tree_map(jnp.copy, params)}

  def block(reps):
    p = state["params"]
    for _ in range(reps):
      p = step(p, x, labels)
    jax.block_until_ready(p)
    state["params"] = p
  return block


def torch_device():
  """Where PyTorch runs beside JAX: "cuda" when JAX is on a GPU and torch sees one, "cpu" when JAX is
  on the CPU, else None (no like-for-like comparison is possible)."""
  import torch
  backend = jax.default_backend()
  if backend == "cpu":
    return "cpu"
  return "cuda" if backend == "gpu" and torch.cuda.is_available() else None


def torch_block(spec: ModelSpec, seed: int = 0, device: str = "cpu"):
  """``block(reps)`` for the same MLP in PyTorch eager (``nn.Linear``, ``F.cross_entropy``, SGD)."""
  import torch  # optional: only imported when asked for

  torch.manual_seed(seed)
  layers = []
  for d_in, d_out in zip(spec.sizes[:-1], spec.sizes[1:]):
    layers += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
  model = torch.nn.Sequential(*layers[:-1]).to(device)
  opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
  x = torch.randn(spec.batch, spec.sizes[0], device=device)
  labels = torch.randint(0, spec.sizes[-1], (spec.batch,), device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def block(reps):
    for _ in range(reps):
      loss = torch.nn.functional.cross_entropy(model(x), labels)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    sync()
  return block


def torch_available():
  """``(True, version)`` when PyTorch imports, else ``(False, reason)``."""
  try:
    import torch
  except ImportError as e:
    return False, f"PyTorch not installed ({e}); install the bench extra to compare"
  return True, torch.__version__
