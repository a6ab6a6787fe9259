"""The inputs where low-precision arithmetic loses most, per rule: the hard cases of the precision contract.

Each sampler is ``sample(rng) -> (args, kwargs)`` in float32 (``jaxbp.check.precision`` rounds the float
leaves to bfloat16); a rule listed here is measured on these beside its registry branches.
"""

from collections.abc import Callable

import numpy as np

Case = Callable[[np.random.Generator], tuple[tuple, dict]]


def _peaked_logits(rng: np.random.Generator, n: int, c: int, p_true: float) -> tuple[np.ndarray, np.ndarray]:
  """Logits [n, c] and int labels [n] where softmax gives the true class probability ``p_true``."""
  z = rng.normal(0.0, 1.0, (n, c))
  y = rng.integers(0, c, n)
  others = np.where(np.arange(c) == y[:, None], -np.inf, z)
  rest = np.log(np.sum(np.exp(others), axis=-1))
  z[np.arange(n), y] = rest + np.log(p_true / (1 - p_true))
  return z.astype(np.float32), y.astype(np.int32)


def _cross_entropy(p_true: float) -> Case:
  def sample(rng):
    z, y = _peaked_logits(rng, 8, 16, p_true)
    return (z, y), {"reduction": "mean"}
  return sample


def _linear_cross_entropy(p_true: float) -> Case:
  """h one-hot rows (exact in any dtype), so h·W = W's rows: the logits are W's, peaked as asked."""
  def sample(rng):
    z, y = _peaked_logits(rng, 8, 16, p_true)
    return (np.eye(8, dtype=np.float32), z, y), {"chunk_size": 4}
  return sample


def _scaled(shape: tuple[int, ...], scale: float, offset: float = 0.0, n_args: int = 1,
            extra: Callable[[np.random.Generator, tuple[int, ...]], tuple] | None = None, **kwargs) -> Case:
  """``n_args`` arrays of normal values × ``scale`` + ``offset``, then ``extra(rng, shape)``'s arrays."""
  def sample(rng):
    xs = tuple((offset + scale * rng.normal(size=shape)).astype(np.float32) for _ in range(n_args))
    return xs + (extra(rng, shape) if extra else ()), dict(kwargs)
  return sample


def _affine(rng, shape, axis=-1):
  c = shape[axis]
  return (rng.uniform(0.5, 2.0, c).astype(np.float32), rng.normal(size=c).astype(np.float32))


def _gamma(rng, shape):
  return (rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32),)


def _wide_weights(rng, shape):
  return (rng.normal(size=(shape[-1], 8)).astype(np.float32) / np.sqrt(shape[-1]),)


def _wide_linear(rng, shape):
  return _wide_weights(rng, shape) + (rng.normal(size=8).astype(np.float32),)


def _attention_scores(causal: bool) -> Case:
  """Independent random q, k with scale·q·k of standard deviation 30 (scores of 30 and more)."""
  def sample(rng):
    d = 16
    s = np.sqrt(30.0 / np.sqrt(d))  # entries N(0, s²): q·k/√d has standard deviation s²·√d = 30
    q, k = (s * rng.normal(size=(1, 32, 2, d)) for _ in range(2))
    v = rng.normal(size=(1, 32, 2, d))
    return tuple(x.astype(np.float32) for x in (q, k, v)), {"causal": causal, "block_size": 8}
  return sample


_LARGE = _scaled((4, 64), 8.0)  # activations of magnitude up to ~30
HARD_CASES: dict[str, dict[str, Case]] = {
    "softmax_cross_entropy": {"true class p = 0.999": _cross_entropy(0.999),
                              "true class p = 1e-6": _cross_entropy(1e-6)},
    "linear_softmax_cross_entropy": {"true class p = 0.999": _linear_cross_entropy(0.999),
                                     "true class p = 1e-6": _linear_cross_entropy(1e-6)},
    "softmax": {"scores of scale 30": _scaled((4, 64), 30.0)},
    "log_softmax": {"scores of scale 30": _scaled((4, 64), 30.0)},
    "attention": {"scores of 30 and more": _attention_scores(False),
                  "scores of 30 and more, causal": _attention_scores(True)},
    "rms_norm": {"rows of mean square 1e4": _scaled((4, 256), 100.0, extra=_gamma)},
    "layer_norm": {"rows of mean 100, std 1": _scaled((4, 256), 1.0, offset=100.0, extra=_affine),
                   "rows of mean square 1e4": _scaled((4, 256), 100.0, extra=_affine)},
    "batch_norm": {"columns of mean 100, std 1": _scaled((256, 4), 1.0, offset=100.0, extra=_affine)},
    "group_norm": {"rows of mean 100, std 1": _scaled((2, 8, 8, 4), 1.0, offset=100.0, extra=_affine,
                                                      groups=2)},
    "matmul": {"a reduction over 4096": _scaled((4, 4096), 1.0, extra=_wide_weights)},
    "linear": {"a reduction over 4096": _scaled((4, 4096), 1.0, extra=_wide_linear)},
    **{name: {"large activations": _LARGE}
       for name in ("sigmoid", "tanh", "softplus", "gelu", "silu", "elu", "exp")},
    "squared_error": {"large values, small differences": _scaled((8, 64), 1.0, offset=300.0, n_args=2)},
    "mse": {"large values, small differences": _scaled((8, 64), 1.0, offset=300.0, n_args=2)},
}
