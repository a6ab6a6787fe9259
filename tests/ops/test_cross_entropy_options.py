"""The language-model options of the two cross-entropy rules (ignore_index, label_smoothing, z_loss, softcap)
against an implementation written here with torch's formulation (an explicit smoothed target distribution),
their precision on hard rows in float32 and bfloat16, and the chunked rule's memory with every option on."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import ops

OPTIONS = [
    {},
    {"softcap": 1.5},
    {"label_smoothing": 0.1},
    {"label_smoothing": 1.0},
    {"z_loss": 0.2},
    {"ignore_index": -100},
    {"ignore_index": -100, "softcap": 2.0, "label_smoothing": 0.3, "z_loss": 0.1},
]


def _torch_style(logits, labels, reduction, ignore_index=None, label_smoothing=0.0, z_loss=0.0, softcap=None):
  """torch.nn.functional.cross_entropy's definition: the target (1 − ε)·onehot + ε/V against log_softmax,
  rows with ignore_index dropped, "mean" over the rest; plus z·logsumexp² and the tanh cap."""
  z = logits if softcap is None else softcap * jnp.tanh(logits / softcap)
  v = z.shape[-1]
  keep = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
  target = (1 - label_smoothing) * jax.nn.one_hot(jnp.where(keep, labels, 0), v) + label_smoothing / v
  log_z = jnp.log(jnp.sum(jnp.exp(z - z.max(-1, keepdims=True)), -1)) + z.max(-1)
  rows = -jnp.sum(target * (z - log_z[:, None]), -1) + z_loss * log_z ** 2
  rows = rows * keep
  return {"mean": jnp.sum(rows) / jnp.sum(keep), "sum": jnp.sum(rows), "none": rows}[reduction]


def _data(n=9, d=5, v=11, seed=0, ignored=(1, 2)):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, v, size=n)
  labels[list(ignored)] = -100
  return rng.normal(size=(n, d)), rng.normal(size=(d, v)), jnp.asarray(labels, jnp.int32)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_both_rules_match_torchs_formulation_in_float64(options, reduction):
  h, w, labels = _data()
  if "ignore_index" not in options:
    labels = jnp.where(labels < 0, 3, labels)
  with jax.enable_x64(True):
    h, w = jnp.asarray(h), jnp.asarray(w)
    g = jnp.linspace(0.5, 1.5, 9) if reduction == "none" else jnp.asarray(1.3)
    want, want_vjp = jax.vjp(lambda h, w: _torch_style(h @ w, labels, reduction, **options), h, w)
    rules = {"softmax_cross_entropy": lambda h, w: ops.softmax_cross_entropy(h @ w, labels, reduction, **options),
             "linear": lambda h, w: ops.linear_softmax_cross_entropy(h, w, labels, chunk_size=2,
                                                                     reduction=reduction, **options)}
    for f in rules.values():
      got, got_vjp = jax.vjp(f, h, w)
      chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
      chex.assert_trees_all_close(got_vjp(g), want_vjp(g), rtol=1e-11, atol=1e-12)


def test_ignored_rows_have_no_gradient_and_a_fully_ignored_chunk_changes_nothing():
  h, w, labels = _data(ignored=(0, 1))               # chunk_size 2: the first chunk is wholly ignored
  h, w = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32)
  f = lambda h: ops.linear_softmax_cross_entropy(h, w, labels, chunk_size=2, ignore_index=-100, z_loss=0.1)
  dh = jax.grad(f)(h)
  assert np.all(np.asarray(dh[:2]) == 0) and np.all(np.abs(np.asarray(dh[2:])).sum(-1) > 0)
  rest = ops.linear_softmax_cross_entropy(h[2:], w, labels[2:], z_loss=0.1)       # mean over the kept 7
  chex.assert_trees_all_close(f(h), rest, rtol=1e-6)
  all_ignored = jnp.full_like(labels, -100)
  loss, dh = jax.value_and_grad(lambda h: ops.softmax_cross_entropy(h @ w, all_ignored, ignore_index=-100))(h)
  assert np.isnan(loss) and np.all(np.asarray(dh) == 0)                          # torch: NaN, no gradient


@pytest.mark.parametrize("p_true", [0.999, 1e-6])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_hard_rows_keep_their_precision(p_true, dtype, tol):
  """Rows whose true class has probability 0.999 (a loss of 1e-3) or 1e-6 (a loss of 13.8), with every
  option on: the loss and gradients, computed in float32 from inputs rounded to ``dtype``, against float64
  of the same rounded inputs (bfloat16's loss and gradient are rounded to bfloat16 once, at the end)."""
  v, n = 64, 8
  rng = np.random.default_rng(1)
  labels = rng.integers(0, v, size=n).astype(np.int32)
  logits = rng.normal(size=(n, v)) * 0.1
  rest = np.log((1 - p_true) / (v - 1))                  # the other classes share 1 − p_true evenly
  logits += np.where(np.arange(v) == labels[:, None], np.log(p_true), rest)
  h, w = np.asarray(jnp.asarray(logits, dtype), np.float64), np.eye(v)
  opts = {"label_smoothing": 1e-3, "z_loss": 1e-4, "softcap": 30.0}
  with jax.enable_x64(True):
    want, want_vjp = jax.vjp(lambda h: _torch_style(h @ w, jnp.asarray(labels), "sum", **opts), jnp.asarray(h))
    want, want_dh = float(want), np.asarray(want_vjp(jnp.asarray(1.0))[0])
  for f in (lambda h: ops.softmax_cross_entropy(h, labels, "sum", **opts),
            lambda h: ops.linear_softmax_cross_entropy(h, jnp.eye(v, dtype=dtype), labels, reduction="sum", **opts)):
    got, vjp = jax.vjp(f, jnp.asarray(h, dtype))
    (dh,) = vjp(jnp.ones((), dtype))
    assert abs(float(got) - want) <= tol * abs(want)
    # softmax − onehot is formed from p ≈ 1 in float32: a few float32 roundings of 1, then one of dtype
    assert np.max(np.abs(np.asarray(dh, np.float64) - want_dh)) <= tol * np.max(np.abs(want_dh)) + 4 * 2.0 ** -23


def _temp_bytes(f, *args):
  return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_options_keep_the_chunked_memory():
  """Every option on, the rule's temporary memory stays a fraction of autodiff's, and exceeds the plain
  rule's by at most one [chunk, V] block (softcap's capped logits live beside the raw ones; ignore_index,
  smoothing and z-loss add nothing measurable: they are elementwise per chunk or per row)."""
  n, d, v = 1024, 64, 4096
  h, w = jnp.ones((n, d)), jnp.ones((d, v))
  labels = jnp.zeros((n,), jnp.int32)
  opts = {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 30.0}
  step = {name: jax.grad(lambda h, w, f=f, o=o: f(h, w, labels, **o), argnums=(0, 1)) for name, f, o in (
      ("options", ops.linear_softmax_cross_entropy, opts), ("plain", ops.linear_softmax_cross_entropy, {}),
      ("autodiff", ops.reference.linear_softmax_cross_entropy, opts))}
  mem = {name: _temp_bytes(f, h, w) for name, f in step.items()}
  assert mem["options"] <= mem["autodiff"] / 4
  assert mem["options"] <= mem["plain"] + 256 * v * 4             # the default chunk here: 256 rows


def test_bad_options_name_the_argument():
  logits, labels = jnp.ones((2, 3)), jnp.array([0, 1])
  cases = [({"label_smoothing": 1.5}, ValueError, "'label_smoothing' must be in \\[0, 1\\]"),
           ({"z_loss": -1.0}, ValueError, "'z_loss' must be >= 0"),
           ({"softcap": 0.0}, ValueError, "'softcap' must be > 0"),
           ({"ignore_index": 1.0}, TypeError, "'ignore_index' must be a Python int")]
  for kw, error, message in cases:
    with pytest.raises(error, match=message):
      ops.softmax_cross_entropy(logits, labels, **kw)
    with pytest.raises(error, match=message):
      ops.linear_softmax_cross_entropy(logits, jnp.ones((3, 4)), labels, **kw)
  with pytest.raises(ValueError, match="labels must lie in"):
    ops.softmax_cross_entropy(logits, jnp.array([0, -100]), ignore_index=-1)
  with pytest.raises(ValueError, match="'ignore_index' needs integer labels"):
    ops.softmax_cross_entropy(logits, jnp.full((2, 3), 1 / 3), ignore_index=-100)
