"""How many planted backward bugs each gradient checker catches, and how many correct rules it fails.

    python benchmarks/checker_power.py [--quick] [--no-torch]

Each bug is a ``jax.custom_vjp`` whose backward differs from a correct rule in one planted way, with
inputs that reach the planted path (a batch of one for a batch-of-one bug, probability labels for a
probability-label bug), as a per-branch sampler would give them. Each goes through
``check_vjp(..., checks="all", second_order=True)`` and ``jax.test_util.check_grads(order=2,
modes=["rev"])`` in float32 and in float64 (the inputs cast). When torch is installed, each bug's torch
transcription in ``_torch_corpus.py`` (the same formula and planted bug as a ``torch.autograd.Function``;
no bridge from JAX) goes through ``torch.autograd.gradcheck`` and ``gradgradcheck`` (their defaults, float64,
plus ``check_batched_grad=True``) at the same inputs; a bug that cannot exist in torch says "n/a", and why
below the table. Every correct rule of ``jaxbp.ops.REGISTRY`` in float32, at the first draw of its sampler
(seeds 0, 1, ...) with no empty array, is the false-positive control; for gradcheck, the registry rules
transcribed in ``_torch_corpus.CONTROLS``, at the same inputs in float64. ``--quick`` leaves out the
transform matrix (``checks`` = the classic ones plus linearity, cotangents and determinism).
"""

import argparse
import importlib.util
import itertools
import math
from pathlib import Path
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
from jax.scipy.special import erf
from jax.test_util import check_grads
import numpy as np

from jaxbp.check import check_vjp
from jaxbp.ops import REGISTRY

RNG = np.random.default_rng(0)
SIG = jax.nn.sigmoid


def _x(*shape, low=-2.0, high=2.0, dtype=np.float32):
  return RNG.uniform(low, high, size=shape).astype(dtype)


def rule(fwd, bwd, name):
  """A custom_vjp computing ``fwd(*args)`` whose backward is ``bwd(args, out, g)``."""
  @jax.custom_vjp
  def f(*args):
    return fwd(*args)
  f.defvjp(lambda *a: (fwd(*a), (a, fwd(*a))), lambda res, g: tuple(bwd(res[0], res[1], g)))
  f.__name__ = name
  return f


def _softmax_bwd(y, g, axis=-1):
  return y * (g - jnp.sum(g * y, axis=axis, keepdims=True))


@jax.custom_batching.custom_vmap
def _kernel(y, g):
  return _softmax_bwd(y, g)


@_kernel.def_vmap
def _kernel_vmap(axis_size, in_batched, y, g):
  y, g = (a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip((y, g), in_batched))
  return _softmax_bwd(y, g, axis=1), True  # planted: assumes [batch, classes]


_CALLS = itertools.count()


def _noise():
  """k·2⁻²³ for k = 1, ..., 16 in turn, one per call: two calls differ unless 16 calls apart, in every run.
  (An unseeded uniform draw in [0, 1e-6) rounds to one of about 8 values of 1 + u in float32, so two calls
  agreed about once in 8 and the verdicts of a run-twice check flipped between runs.)"""
  return jax.pure_callback(lambda: np.float32((next(_CALLS) % 16 + 1) * 2.0 ** -23),
                           jax.ShapeDtypeStruct((), jnp.float32))


def _gelu(x):
  return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _gelu_tanh_grad(x):
  c = math.sqrt(2 / math.pi)
  t = jnp.tanh(c * (x + 0.044715 * x ** 3))
  return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)


def _ce(z, p):  # softmax cross-entropy, probabilities or one-hot p, mean over rows
  return -jnp.mean(jnp.sum(p * jax.nn.log_softmax(z), -1))


def _ce_bwd_argmax(a, _, g):
  z, p = a
  hard = jax.nn.one_hot(jnp.argmax(p, -1), p.shape[-1], dtype=z.dtype)  # planted: hard labels
  return g * (jax.nn.softmax(z) - hard) / z.shape[0], -g * jax.nn.log_softmax(z) / z.shape[0]


def _hinge(s, y):  # multiclass SVM loss, mean over rows; y one-hot
  m = jnp.maximum(0, s - jnp.sum(s * y, -1, keepdims=True) + 1) * (1 - y)
  return jnp.mean(jnp.sum(m, -1))


def _hinge_bwd(scale):
  def bwd(a, _, g):
    s, y = a
    act = ((s - jnp.sum(s * y, -1, keepdims=True) + 1) > 0) * (1 - y)
    ds = act - y * jnp.sum(act, -1, keepdims=True)
    return g * ds * scale(s), jnp.zeros_like(y)
  return bwd


def _ln(x):
  mu = jnp.mean(x, -1, keepdims=True)
  return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, -1, keepdims=True) + 1e-5)


def _ln_bwd_no_mean(a, y, g):
  (x,) = a
  inv = 1 / jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-5)
  return (inv * (g - y * jnp.mean(g * y, -1, keepdims=True)),)  # planted: drops −mean(g)


def _eager(a, y, g):
  y = jnp.asarray(np.asarray(y))  # planted: a host round trip, no jit
  return (g * y * (1 - y),)


def _onehot(n, c):
  return np.eye(c, dtype=np.float32)[RNG.integers(0, c, n)]


def corpus():
  """(kind, fn, reference, args) for each planted bug."""
  mm, add, sm = (lambda x, w: x @ w), (lambda x, y: x + y), (lambda x: jax.nn.softmax(x, -1))
  sig_bwd = lambda k: (lambda a, y, g: (k(a[0], y, g),))
  x34, sq = _x(3, 4), (_x(4, 4), _x(4, 4))
  hot = _onehot(4, 5)
  probs = RNG.dirichlet(np.ones(5), size=4).astype(np.float32)
  return [
      ("wrong sign", rule(SIG, sig_bwd(lambda x, y, g: -g * y * (1 - y)), "sig"), SIG, (x34,)),
      ("dropped term", rule(jnp.tanh, sig_bwd(lambda x, y, g: g * (1 - y)), "tanh"), jnp.tanh, (x34,)),
      ("dropped power", rule(lambda x: x ** 3, sig_bwd(lambda x, y, g: 3 * x * g), "cube"), lambda x: x ** 3, (x34,)),
      ("wrong axis", rule(sm, sig_bwd(lambda x, y, g: _softmax_bwd(y, g, 0)), "softmax"), sm, (sq[0],)),
      ("transposed product", rule(mm, lambda a, _, g: (g @ a[1], a[0].T @ g), "matmul"), mm, sq),
      ("off by scale 1e-3", rule(SIG, sig_bwd(lambda x, y, g: g * y * (1 - y) * 1.001), "sig"), SIG, (x34,)),
      ("off by scale 1e-5", rule(SIG, sig_bwd(lambda x, y, g: g * y * (1 - y) * 1.00001), "sig"), SIG, (x34,)),
      ("off by scale 1e-5 in dw", rule(mm, lambda a, _, g: (g @ a[1].T, a[0].T @ g * 1.00001), "matmul"), mm, sq),
      ("wrong dtype (float32 for float16)", rule(lambda x: 2 * x, lambda a, y, g: ((2 * g).astype(jnp.float32),),
                                                 "double"), lambda x: 2 * x, (_x(3, 4, dtype=np.float16),)),
      ("computed in bfloat16", rule(SIG, sig_bwd(lambda x, y, g: (g * y * (1 - y)).astype(jnp.bfloat16)
                                                 .astype(g.dtype)), "sig"), SIG, (x34,)),
      ("nonlinear in g (g²)", rule(SIG, sig_bwd(lambda x, y, g: (g + 1e-4 * g ** 2) * y * (1 - y)), "sig"), SIG,
       (x34,)),
      ("nonlinear in g (g > 0)", rule(SIG, sig_bwd(lambda x, y, g: jnp.where(g > 0, 1.0, 0.9999) * g * y * (1 - y)),
                                      "sig"), SIG, (x34,)),
      ("constant term", rule(SIG, sig_bwd(lambda x, y, g: g * y * (1 - y) + 3e-8), "sig"), SIG, (x34,)),
      ("correct except at batch size 1", rule(_ce, lambda a, _, g: (
          g * (jax.nn.softmax(a[0]) - a[1]) / max(a[0].shape[0] - (a[0].shape[0] == 1), 1) / (
              2 if a[0].shape[0] == 1 else 1), -g * jax.nn.log_softmax(a[0]) / a[0].shape[0]), "ce"),
       _ce, (_x(1, 5), _onehot(1, 5))),
      ("correct except for rank >= 3", rule(sm, sig_bwd(lambda x, y, g: _softmax_bwd(y, g, 1)), "softmax"), sm,
       (_x(2, 3, 4),)),
      ("broken only under vmap", rule(sm, sig_bwd(lambda x, y, g: _kernel(y, g)), "softmax"), sm, (sq[0],)),
      ("broken only at second order", rule(SIG, sig_bwd(lambda x, y, g: g * lax.stop_gradient(y * (1 - y))),
                                           "sig"), SIG, (x34,)),
      ("nondeterministic", rule(SIG, sig_bwd(lambda x, y, g: g * y * (1 - y) * (1 + _noise())), "sig"), SIG, (x34,)),
      ("wrong only for broadcast inputs", rule(add, lambda a, _, g: (g, jnp.sum(g, 0).reshape(a[1].shape)
                                                                     if a[1].ndim < g.ndim else g[:1]), "add"),
       add, (x34, _x(1, 4))),
      ("wrong only for probability labels", rule(_ce, _ce_bwd_argmax, "ce"), _ce, (_x(4, 5), probs)),
      ("N times too large under mean", rule(_hinge, _hinge_bwd(lambda s: 1.0), "hinge"), _hinge, (_x(4, 5), hot)),
      ("layer norm without the mean term", rule(_ln, _ln_bwd_no_mean, "layer_norm"), _ln, (x34,)),
      ("log_softmax with g for sum(g)", rule(lambda x: jax.nn.log_softmax(x, -1), lambda a, y, g: (
          g - jnp.exp(y) * g,), "log_softmax"), lambda x: jax.nn.log_softmax(x, -1), (x34,)),
      ("mse without the factor 2", rule(lambda p, t: jnp.mean((p - t) ** 2), lambda a, _, g: (
          g * (a[0] - a[1]) / a[0].size, -g * (a[0] - a[1]) / a[0].size), "mse"),
       lambda p, t: jnp.mean((p - t) ** 2), (x34, _x(3, 4))),
      ("approximate derivative (tanh GELU)", rule(_gelu, sig_bwd(lambda x, y, g: g * _gelu_tanh_grad(x)), "gelu"),
       _gelu, (_x(64, low=-3, high=3),)),
      ("one derivative too many", rule(jax.nn.softplus, sig_bwd(lambda x, y, g: g * SIG(x) * (1 - SIG(x))),
                                       "softplus"), jax.nn.softplus, (x34,)),
      ("overflows in float32", rule(SIG, sig_bwd(lambda x, y, g: g * jnp.exp(-x) / (1 + jnp.exp(-x)) ** 2), "sig"),
       SIG, (np.concatenate([_x(6), np.float32([-100, 100])]),)),
      ("eager only (host round trip)", rule(SIG, _eager, "sig"), SIG, (x34,)),
      ("unsummed broadcast (wrong shape)", rule(add, lambda a, _, g: (g, g), "add"), add, (x34, _x(4))),
      ("one pytree leaf forgotten", rule(lambda w, b: 0.05 * (jnp.sum(w ** 2) + jnp.sum(b ** 2)),
                                         lambda a, _, g: (0.1 * g * a[0], jnp.zeros_like(a[1])), "l2"),
       lambda w, b: 0.05 * (jnp.sum(w ** 2) + jnp.sum(b ** 2)), (x34, _x(4))),
      ("cos with the wrong sign", rule(jnp.sin, sig_bwd(lambda x, y, g: -g * jnp.cos(x)), "sin"), jnp.sin, (x34,)),
      ("mean where the rule sums", rule(lambda x: jnp.sum(x, 0), lambda a, _, g: (
          jnp.broadcast_to(g / a[0].shape[0], a[0].shape),), "sum"), lambda x: jnp.sum(x, 0), (x34,)),
      ("off by scale 1e-4 in one small element", rule(lambda x, w: jnp.sum(x * w), lambda a, _, g: (
          (g * a[1]).at[0].multiply(1.01), g * a[0]), "dot"), lambda x, w: jnp.sum(x * w),
       (_x(256), np.concatenate([np.float32([0.01]), _x(255, low=1, high=2)]))),
  ]


def run_check_vjp(fn, ref, args, checks):
  try:
    check_vjp(fn, ref, *args, checks=checks, second_order=True)
    return False
  except AssertionError:
    return True


def _is_float(a):
  return hasattr(a, "dtype") and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended) and bool(
      jnp.issubdtype(a.dtype, jnp.floating)) or isinstance(a, dict)


def run_check_grads(fn, args, dtype):
  """check_grads differentiates every argument: the others (labels, keys, Python numbers) are fixed."""
  with jax.enable_x64(dtype == np.float64):
    pos = [i for i, a in enumerate(args) if _is_float(a)]
    cast = [jax.tree.map(lambda x: np.asarray(x, dtype), args[i]) for i in pos]

    def f(*floats):
      full = list(args)
      for i, a in zip(pos, floats):
        full[i] = a
      return fn(*full)
    try:
      check_grads(f, tuple(cast), order=2, modes=["rev"])
      return False
    except Exception:  # pylint: disable=broad-except  # an AssertionError or the rule's own error: caught
      return True


COLUMNS = ("check_vjp", "check_grads float32", "check_grads float64", "gradcheck + gradgradcheck float64")


def _torch_corpus():
  """benchmarks/_torch_corpus.py (it imports torch), or None where torch is not installed."""
  if importlib.util.find_spec("torch") is None:
    return None
  spec = importlib.util.spec_from_file_location("_torch_corpus", Path(__file__).with_name("_torch_corpus.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _gradcheck(tc, entry, args, label, notes):
  """gradcheck's cell: True (caught / false positive), False, or None (n/a); a reason or an error into notes."""
  if tc is None or entry is None:
    return None
  if isinstance(entry, str):
    notes.append(f"n/a, {label}: {entry}.")
    return None
  caught, error = tc.run_gradcheck(entry, args)
  if error:
    notes.append(f"{label}: gradcheck raised {error}")
  return caught


def _cells(flags, hit, miss):
  return " | ".join("n/a" if c is None else hit if c else miss for c in flags)


def _planted(bugs, checks, tc, notes):
  rows = []
  for kind, fn, ref, args in bugs:
    row = (run_check_vjp(fn, ref, args, checks), run_check_grads(fn, args, np.float32),
           run_check_grads(fn, args, np.float64), _gradcheck(tc, tc and tc.PLANTED[kind], args, kind, notes))
    rows.append(row)
    print(f"| {kind} | {_cells(row, 'caught', '**missed**')} |", flush=True)
  return rows


def _control_sample(r):
  """The rule's draw from the first of seeds 0, 1, ... with no empty array: an empty input passes every check."""
  for seed in range(50):
    args, kwargs = r.sample(np.random.default_rng(seed), np.float32)
    if all(np.size(leaf) > 0 for leaf in jax.tree.leaves(args)):
      break
  return args, kwargs


def _controls(checks, tc, notes):
  rows = []
  for name, r in sorted(REGISTRY.items()):
    args, kwargs = _control_sample(r)
    bound = lambda *a, r=r, kwargs=kwargs: r.fn(*a, **kwargs)
    entry = tc.CONTROLS[name](**kwargs) if tc and name in tc.CONTROLS else None
    flags = (run_check_vjp(r.fn, r.reference, args, checks) if not kwargs else _with_kwargs(r, args, kwargs, checks),
             run_check_grads(bound, args, np.float32), run_check_grads(bound, args, np.float64),
             _gradcheck(tc, entry, args, f"(correct) {name}", notes))
    rows.append(flags)
    if any(flags):
      print(f"| (correct) {name} | {_cells(flags, '**false positive**', 'passes')} |", flush=True)
  return rows


def _totals(rows):
  """'**c/n**' per column over the rows where the column ran."""
  ran = [[r[i] for r in rows if r[i] is not None] for i in range(len(COLUMNS))]
  return " | ".join(f"**{sum(c)}/{len(c)}**" if c else "n/a" for c in ran)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--no-torch", action="store_true", help="no gradcheck column even where torch is installed")
  opts = parser.parse_args(argv)
  checks = ("forward", "vjp", "finite_differences", "jacobian", "transpose", "jit", "vmap", "second_order",
            "linearity", "cotangents", "determinism") if opts.quick else "all"
  start, notes = time.time(), []
  tc = None if opts.no_torch else _torch_corpus()
  bugs = corpus()  # once: its inputs come from the module's RNG in order
  if tc is not None and {k for k, *_ in bugs} != set(tc.PLANTED):
    sys.exit("benchmarks/_torch_corpus.py: PLANTED's kinds differ from corpus()'s")
  print("| planted bug | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS))
  bugs, controls = _planted(bugs, checks, tc, notes), _controls(checks, tc, notes)
  print(f"| **caught, of {len(bugs)} planted bugs** | {_totals(bugs)} |")
  print(f"| **false positives, of {len(controls)} correct rules** | {_totals(controls)} |\n")
  if tc is None:
    print("torch.autograd.gradcheck: n/a (" + ("--no-torch)." if opts.no_torch else "torch is not installed here)."))
  else:
    print(f"gradcheck: torch {tc.torch.__version__}. Its totals count the rows it ran: n/a is a planted bug that "
          f"cannot exist in torch (why below) or a registry rule not transcribed ({len(tc.CONTROLS)} of the "
          f"{len(controls)} are: the elementwise gates, activations, softmaxes, matmul, linear, mse, squared_error).")
  print("".join(f"\n- {n}" for n in notes))
  print(f"{time.time() - start:.0f} s")
  return 0


def _with_kwargs(r, args, kwargs, checks):
  try:
    check_vjp(r.fn, r.reference, *args, kwargs=kwargs, checks=checks, second_order=True)
    return False
  except AssertionError:
    return True


if __name__ == "__main__":
  sys.exit(main())
