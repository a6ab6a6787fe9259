"""Memory-saving rules in the benchmark: attention, fused linear cross-entropy, rms/layer norm, the transformer.

Every case is a jitted ``jax.value_and_grad`` step, the manual rule against ``jax.grad`` of its plain
reference (for the transformer: the whole training loss on ``jaxbp.ops`` against ``jaxbp.ops.reference``),
timed interleaved in rounds (``_timing``, medians of the per-round paired ratios), with the compiled
temporary memory from XLA's ``memory_analysis()`` (deterministic). The growth table divides each
variant's memory at one size by its memory at the size before: O(T) memory doubles when T doubles,
O(T²) memory quadruples.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.bench._compare import AUTODIFF
from jaxbp.bench._compare import MANUAL
from jaxbp.bench._compare import manual_vs_autodiff
from jaxbp.insight import tables
from jaxbp.models.transformer import Transformer
from jaxbp.models.transformer import init_transformer
from jaxbp.models.transformer import transformer_apply
from jaxbp.models.transformer import transformer_head

GOALS = {"attention": ("≤ 1/8 at T 4096", "≤ 1.2×"), "linear CE": ("≤ 1/4 at V 32768", "≤ 1.05×"),
         "rms_norm": ("≤ 1.0×", "≤ 1.05×"), "layer_norm": ("≤ 1.0×", "≤ 1.05×"),
         "transformer": ("< 1.0×", "≤ 1.05×")}

# (family, label, sizes): attention (B, T, heads, Dh, causal); linear CE (N, D, V); norms (N, D);
# transformer (batch, T, width, mlp_width, layers).
FULL = ([("attention", f"T {t}{' causal' if c else ''}", (1, t, 4, 64, c)) for t in (1024, 2048, 4096)
         for c in (False, True)]
        + [("linear CE", f"V {v}", (4096, 512, v)) for v in (8192, 32768)]
        + [("rms_norm", "4096×4096", (4096, 4096)), ("layer_norm", "4096×4096", (4096, 4096))]
        + [("transformer", "default", (64, 16, 64, 256, 2)), ("transformer", "4× wider", (64, 16, 256, 1024, 2))])
TINY = [("attention", "T 16", (1, 16, 2, 4, False)), ("attention", "T 32 causal", (1, 32, 2, 4, True)),
        ("linear CE", "V 64", (32, 8, 64)), ("rms_norm", "8×8", (8, 8)), ("layer_norm", "8×8", (8, 8)),
        ("transformer", "tiny", (4, 8, 8, 16, 1))]


def _cotangent_loss(fn: Callable[..., Any], rng: np.random.Generator, *args: Any) -> tuple[Callable, Any]:
  """L = Σ fn(*args) ⊙ u for a fixed random u: every output element gets its own upstream gradient."""
  out = jax.eval_shape(fn, *args)
  u = jnp.asarray(rng.normal(size=out.shape), out.dtype)
  return (lambda u, *a: jnp.sum(fn(*a) * u)), u


def _case(family: str, sizes: tuple, variant: Any, rng: np.random.Generator) -> tuple[Any, tuple]:
  """(step, arguments): the jitted value_and_grad of one case on op namespace ``variant``."""
  normal = lambda *shape, s=1.0: jnp.asarray(rng.normal(size=shape) * s, jnp.float32)
  if family == "attention":
    b, t, h, d, causal = sizes
    fn = lambda q, k, v: variant.attention(q, k, v, causal=causal)
    loss, u = _cotangent_loss(fn, rng, *(jax.ShapeDtypeStruct((b, t, h, d), jnp.float32),) * 3)
    return jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3))), (u, normal(b, t, h, d), normal(b, t, h, d),
                                                                  normal(b, t, h, d))
  if family == "linear CE":
    n, d, v = sizes
    labels = jnp.asarray(rng.integers(0, v, size=n), jnp.int32)
    loss = lambda h, w, y: variant.linear_softmax_cross_entropy(h, w, y)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (normal(n, d), normal(d, v, s=d ** -0.5), labels)
  if family in ("rms_norm", "layer_norm"):
    n, d = sizes
    fn = getattr(variant, family)
    params = (normal(d), normal(d)) if family == "layer_norm" else (normal(d),)
    loss, u = _cotangent_loss(fn, rng, jax.ShapeDtypeStruct((n, d), jnp.float32), *params)
    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(1, 2 + len(params))))), (u, normal(n, d), *params)
  return _transformer_case(sizes, variant, rng)


def _transformer_case(sizes, variant, rng):
  batch, t, width, mlp, layers = sizes
  config = Transformer(layers=layers, width=width, heads=4, mlp_width=mlp)
  params = init_transformer(jax.random.key(0), config, vocab_size=13, length=t, num_classes=13)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(batch, t)), jnp.int32) for _ in range(2))

  def loss(params, ids, targets):
    losses, _ = transformer_head(params, transformer_apply(params, ids, config, ops=variant), targets, variant)
    return jnp.mean(losses)
  return jax.jit(jax.value_and_grad(loss)), (params, ids, targets)


def measure_case(family: str, label: str, sizes: tuple, *, rounds: int, target_s: float) -> dict:
  """Times and sizes the manual step against jax.grad of the reference, for one case."""
  compiled, calls = {}, {}
  for name, variant in ((MANUAL, ops), (AUTODIFF, ops.reference)):
    step, args = _case(family, sizes, variant, np.random.default_rng(0))
    compiled[name], calls[name] = step.lower(*args).compile(), args

  timings, common = manual_vs_autodiff(compiled, calls, rounds=rounds, target_s=target_s)
  row = {"family": family, "size": label, "sizes": [bool(s) if isinstance(s, bool) else int(s) for s in sizes],
         **common}
  if family == "transformer":
    row["tokens_per_s"] = {name: sizes[0] * sizes[1] / (t.median) for name, t in timings.items()}
  return row


def measure(tiny: bool, rounds: int, target_s: float, *, with_torch: bool = False) -> list[dict]:
  """Every case of ``TINY`` or ``FULL``. No PyTorch rows yet."""
  del with_torch
  return [measure_case(family, label, sizes, rounds=rounds, target_s=target_s)
          for family, label, sizes in (TINY if tiny else FULL)]


def mib(b: float) -> str:
  """Bytes as the tables show them: MiB, or KiB below one MiB (the llm section's too)."""
  return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def _growth(rows: list[dict]) -> list[list[str]]:
  """Memory at each size over memory at the size before, per family (attention per causal flag)."""
  out = []
  for family, key in (("attention", lambda r: r["sizes"][4]), ("linear CE", lambda r: None)):
    chain = [r for r in rows if r["family"] == family]
    for prev in chain:
      nxt = next((r for r in chain[chain.index(prev) + 1:] if key(r) == key(prev)), None)
      if nxt is not None:
        grow = nxt["sizes"][1] / prev["sizes"][1] if family == "attention" else nxt["sizes"][2] / prev["sizes"][2]
        out.append([family, f"{prev['size']} → {nxt['size']} (×{grow:g})"] +
                   [f"{nxt['temp_bytes'][n] / max(prev['temp_bytes'][n], 1):.2f}×" for n in (MANUAL, AUTODIFF)])
  return out


def render(rows: list[dict]) -> str:
  """The section as Markdown: the table of cases, then how memory grows with T and V."""
  body = [[r["family"], r["size"], f"{r['ms'][MANUAL]:.1f}", f"{r['ms'][AUTODIFF]:.1f}", f"{r['time_ratio']:.3f}",
           mib(r["temp_bytes"][MANUAL]), mib(r["temp_bytes"][AUTODIFF]),
           "–" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}",
           " / ".join(GOALS[r["family"]]) +
           (f"; {r['tokens_per_s'][MANUAL]:.0f} vs {r['tokens_per_s'][AUTODIFF]:.0f} tokens/s"
            if "tokens_per_s" in r else "")] for r in rows]
  headers = ["case", "size", "manual ms", "jax.grad ms", "time ratio (paired median)", "manual temp",
             "jax.grad temp", "memory ratio", "goal memory / time"]
  text = ("## Memory-saving rules: manual vs jax.grad of the reference\n\n"
          + tables.render(headers, body, markdown=True) + "\n")
  growth = _growth(rows)
  if growth:
    text += ("\nHow the compiled temporary memory grows (memory at the larger size / at the smaller):\n\n"
             + tables.render(["case", "step", "manual", "jax.grad"], growth, markdown=True) + "\n")
  return text
