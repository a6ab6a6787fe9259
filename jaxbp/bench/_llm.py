"""The LLM rulebook in the benchmark (issue 20's table): today's transformer rules against autodiff.

Every case is a jitted ``jax.value_and_grad`` step. Its compiled temporary memory (XLA's
``memory_analysis()``, deterministic) is compared with the case's memory baseline, and its time, paired
and interleaved in rounds (``_timing``), with its time baseline:

- ``jax.grad``: autodiff of the plain reference (``jaxbp.ops.reference``), for most cases;
- ``plain rule``: the same attention rule without the option (softcap, ALiBi, segment ids), whose cost
  the option should barely change;
- ``no window``: the same rule without its sliding window, which the window should make ≥ 4× faster.
  Autodiff's step at T 8192 is compiled for its memory but not run (it holds [heads, T, T] matrices).

Attention cases take q [B, T, heads, Dh] and k, v [B, T, kv_heads, Dh]; a random cotangent u weighs
every output element (L = Σ f(x) ⊙ u), so each output gets its own upstream gradient.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import ops
from jaxbp.bench._attn import mib
from jaxbp.bench._compare import AUTODIFF
from jaxbp.bench._compare import MANUAL
from jaxbp.bench._compare import manual_vs_autodiff
from jaxbp.insight import cost
from jaxbp.insight import tables
from jaxbp.models.llama import Llama
from jaxbp.models.llama import init_llama
from jaxbp.models.llama import llama_apply
from jaxbp.models.llama import llama_head

PLAIN, NO_WINDOW = "plain rule", "no window"


class Case(NamedTuple):
  """One row: ``kind`` picks the step, ``sizes`` its shapes, ``options`` its keyword arguments; memory
  is compared with ``memory_vs`` and time with ``time_vs`` (``jax.grad``, ``plain rule``, ``no window``)."""
  name: str
  size: str
  kind: str
  sizes: tuple
  options: dict
  memory_vs: str
  time_vs: str
  goal: str


def _attn(name, t, heads, kv, dh, options, memory_vs=AUTODIFF, time_vs=AUTODIFF, goal="", b=1):
  size = f"B {b}, T {t}, {heads}/{kv} heads, Dh {dh}, causal"
  return Case(name, size, "attention", (b, t, heads, kv, dh), {"causal": True, **options}, memory_vs, time_vs, goal)


def _cases(tiny: bool) -> list[Case]:
  """Issue 20's table at its sizes, or every case at toy sizes (``tiny``; ``measure`` runs the ``TINY`` ones)."""
  t4, t8, w, dh = (32, 64, 8, 8) if tiny else (4096, 8192, 512, 64)
  mlp, rope, ce, kd = (((32, 16, 24), (1, 32, 4, 8), (64, 16, 128), (64, 8, 128)) if tiny else
                       ((2048, 1024, 2816), (1, 4096, 8, 64), (4096, 512, 32768), (4096, 256, 32768)))
  return [
      _attn("GQA attention", t4, 8, 2, dh, {}, goal="≤ 1/8 / ≤ 1.0×"),
      _attn("sliding window", t8, 8, 2, dh, {"window": w}, time_vs=NO_WINDOW, goal="≤ 1/8 / ≤ 1/4 of no window")
      ._replace(size=f"window {w}, T {t8}, 8/2 heads, Dh {dh}, causal"),
      _attn("softcap", t4, 8, 2, dh, {"softcap": 30.0}, PLAIN, PLAIN, "≤ 1.1× / ≤ 1.2× the plain rule"),
      _attn("ALiBi", t4, 8, 2, dh, {"alibi_slopes": None}, PLAIN, PLAIN, "≤ 1.1× / ≤ 1.2× the plain rule"),
      _attn("segment ids", t4, 8, 2, dh, {"segment_ids": None}, PLAIN, PLAIN, "≤ 1.1× / ≤ 1.2× the plain rule"),
      Case("Llama MLP block", f"N {mlp[0]}, D {mlp[1]}, hidden {mlp[2]}", "mlp", mlp, {}, AUTODIFF, AUTODIFF,
           "≤ 0.8× / ≤ 1.05×"),
      Case("RoPE on q and k", f"B {rope[0]}, T {rope[1]}, {rope[2]} heads, Dh {rope[3]}", "rope", rope, {},
           AUTODIFF, AUTODIFF, "≤ 1.0× / ≤ 1.05×"),
      Case("linear CE (smoothing, z-loss, softcap)", f"N {ce[0]}, D {ce[1]}, V {ce[2]}", "linear CE", ce,
           {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 30.0}, AUTODIFF, AUTODIFF, "≤ 1/4 / ≤ 1.05×"),
      Case("linear distillation (jsd)", f"N {kd[0]}, D {kd[1]}, V {kd[2]}", "distillation", kd,
           {"divergence": "jsd"}, AUTODIFF, AUTODIFF, "≤ 1/4 / ≤ 1.05×"),
      Case("llama training step", "tiny" if tiny else "default (batch 64, T 16)", "llama",
           (4, 8) if tiny else (64, 16), {}, AUTODIFF, AUTODIFF, "< 1.0× / ≤ 1.0×"),
  ]


TINY = ("sliding window", "llama training step")  # the cases --tiny runs: every baseline kind, few compiles


def _weighted(fn: Callable[..., Any], rng: np.random.Generator, *shapes: tuple) -> tuple[Callable, tuple]:
  """(loss, arguments): L = Σ fn(*x) ⊙ u (over each output, for a tuple) for random inputs x of ``shapes``
  and a fixed random u of each output's shape."""
  args = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
  u = jax.tree.map(lambda o: jnp.asarray(rng.normal(size=o.shape), jnp.float32), jax.eval_shape(fn, *args))
  loss = lambda u, *x: sum(jnp.sum(o * w) for o, w in zip(jax.tree.leaves(fn(*x)), jax.tree.leaves(u)))
  return loss, (u, *args)


def _attention_options(options: dict, b: int, t: int, heads: int, rng: np.random.Generator) -> dict:
  """The case's options with its arrays made: ALiBi's slopes 2^(−8h/heads), three segments per row."""
  options = dict(options)
  if "alibi_slopes" in options:
    options["alibi_slopes"] = jnp.asarray(2.0 ** (-8.0 * np.arange(1, heads + 1) / heads), jnp.float32)
  if "segment_ids" in options:
    ids = jnp.asarray(np.sort(rng.integers(0, 3, size=(b, t)), axis=1), jnp.int32)
    options["segment_ids"] = (ids, ids)
  return options


def _step(case: Case, variant: Any, rng: np.random.Generator) -> tuple[Any, tuple]:
  """(jitted value_and_grad, its arguments) of ``case`` on op namespace ``variant``."""
  if case.kind == "attention":
    b, t, heads, kv, dh = case.sizes
    options = _attention_options(case.options, b, t, heads, rng)
    fn: Callable[..., Any] = lambda q, k, v: variant.attention(q, k, v, **options)
    loss, args = _weighted(fn, rng, (b, t, heads, dh), (b, t, kv, dh), (b, t, kv, dh))
    return jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3))), args
  if case.kind == "mlp":
    n, d, f = case.sizes
    fn = lambda x, wg, wu, wd: variant.matmul(variant.swiglu(variant.matmul(x, wg), variant.matmul(x, wu)), wd)
    loss, args = _weighted(fn, rng, (n, d), (d, f), (d, f), (f, d))
    return jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3, 4))), args
  if case.kind == "rope":
    fn = lambda q, k: (variant.rope(q), variant.rope(k))
    loss, args = _weighted(fn, rng, case.sizes, case.sizes)
    return jax.jit(jax.value_and_grad(loss, argnums=(1, 2))), args
  if case.kind in ("linear CE", "distillation"):
    return _head_step(case, variant, rng)
  return _llama_step(case.sizes, variant, rng)


def _head_step(case, variant, rng):
  n, d, v = case.sizes
  normal = lambda *shape, s=1.0: jnp.asarray(rng.normal(size=shape) * s, jnp.float32)
  if case.kind == "linear CE":
    labels = jnp.asarray(rng.integers(0, v, size=n), jnp.int32)
    loss: Callable[..., Any] = lambda h, w, y: variant.linear_softmax_cross_entropy(h, w, y, **case.options)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (normal(n, d), normal(d, v, s=d ** -0.5), labels)
  loss = lambda h, w, ht, wt: variant.linear_distillation_loss(h, w, ht, wt, **case.options)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (normal(n, d), normal(d, v, s=d ** -0.5), normal(n, d),
                                                             normal(d, v, s=d ** -0.5))


def _llama_step(sizes, variant, rng):
  batch, t = sizes
  config = Llama()
  params = init_llama(jax.random.key(0), config, vocab_size=13, num_classes=13)
  ids, targets = (jnp.asarray(rng.integers(0, 13, size=(batch, t)), jnp.int32) for _ in range(2))

  def loss(params, ids, targets):
    losses, _ = llama_head(params, llama_apply(params, ids, config, ops=variant), targets, config, variant)
    return jnp.mean(losses)
  return jax.jit(jax.value_and_grad(loss)), (params, ids, targets)


def _compiled(case: Case, name: str) -> tuple[Any, tuple]:
  """``name``'s compiled step and arguments: the manual rule, jax.grad, or the rule without the option."""
  if name == AUTODIFF:
    step, args = _step(case, ops.reference, np.random.default_rng(0))
  else:
    drop = {MANUAL: (), PLAIN: tuple(o for o in case.options if o != "causal"), NO_WINDOW: ("window",)}[name]
    step, args = _step(case._replace(options={k: v for k, v in case.options.items() if k not in drop}), ops,
                       np.random.default_rng(0))
  return step.lower(*args).compile(), args


def measure_case(case: Case, *, rounds: int, target_s: float) -> dict:
  """Compiles the case's manual step and its baselines; times the manual step against ``time_vs``."""
  names = dict.fromkeys([MANUAL, AUTODIFF, case.memory_vs, case.time_vs])
  built = {name: _compiled(case, name) for name in names}
  temp = {name: cost.compiled_cost(None, compiled=exe).temp_bytes for name, (exe, _) in built.items()}
  pair = {MANUAL: built[MANUAL], AUTODIFF: built[case.time_vs]}  # the timed pair, as _compare names it
  _, common = manual_vs_autodiff({k: v[0] for k, v in pair.items()}, {k: v[1] for k, v in pair.items()},
                                 rounds=rounds, target_s=target_s)
  return {"case": case.name, "size": case.size, "memory_vs": case.memory_vs, "time_vs": case.time_vs,
          "goal": case.goal, "reps": common["reps"], "ms": {MANUAL: common["ms"][MANUAL], case.time_vs:
          common["ms"][AUTODIFF]}, "time_ratio": common["time_ratio"], "temp_bytes": temp,
          "memory_ratio": temp[MANUAL] / temp[case.memory_vs] if temp[case.memory_vs] else None}


def measure(tiny: bool, rounds: int, target_s: float, *, with_torch: bool = False) -> list[dict]:
  """Every case of issue 20's table, or with ``tiny`` the ``TINY`` cases at toy sizes. No PyTorch rows."""
  del with_torch
  return [measure_case(case, rounds=rounds, target_s=target_s) for case in _cases(tiny)
          if not tiny or case.name in TINY]


def render(rows: list[dict]) -> str:
  """The section as Markdown: one row per case, memory and time against each case's baselines."""
  body = [[r["case"], r["size"], mib(r["temp_bytes"][MANUAL]), mib(r["temp_bytes"][r["memory_vs"]]),
           "–" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f} vs {r['memory_vs']}",
           f"{r['ms'][MANUAL]:.1f}", f"{r['ms'][r['time_vs']]:.1f}", f"{r['time_ratio']:.3f} vs {r['time_vs']}",
           r["goal"]] for r in rows]
  headers = ["case", "size", "manual temp", "baseline temp", "memory ratio", "manual ms", "baseline ms",
             "time ratio (paired median)", "goal memory / time"]
  return ("## The LLM rulebook: today's transformer rules vs their baselines\n\n"
          + tables.render(headers, body, markdown=True) + "\n")
