"""The samplers of the losses' registry branches (``losses``, ``linear_cross_entropy``): regression pairs,
classification logits with int or probability labels, and the cross-entropy options drawn on top of either."""

import numpy as np

from jaxbp.ops._registry import uniform
from jaxbp.ops._util import REDUCTIONS


def regression(shape, reductions=("mean", "sum", "none")):
  """Samples (pred, target) of ``shape`` with a reduction drawn from ``reductions``."""
  def sample(rng, dtype):
    kw = {"reduction": str(rng.choice(reductions))}
    return (uniform(rng, shape, dtype), uniform(rng, shape, dtype)), kw
  return sample


def classification(batch, reductions=("mean", "sum", "none"), probabilities=(False, True)):
  """Samples (logits [*batch, 4], labels) with the label kind and the reduction drawn from the given.
  Fixed shapes (random values), so the registry test compiles each shape family once."""
  def sample(rng, dtype):
    c = 4
    logits = uniform(rng, batch + (c,), dtype, low=-3.0, high=3.0)
    if rng.choice(probabilities):
      labels = rng.dirichlet(np.ones(c), size=batch).astype(dtype)
    else:
      labels = rng.integers(0, c, size=batch).astype(np.int32)
    return (logits, labels), {"reduction": str(rng.choice(reductions))}
  return sample


def label_branches(probabilities):
  """Every path of a classification loss for one label kind: each reduction over [N, C] and over
  rank 3 [B, T, C], a batch of one under "mean" (where N = 1 hides a wrong 1/N), and no samples."""
  kind, p = ("probabilities", (True,)) if probabilities else ("int labels", (False,))
  return {
      **{f"{kind}, [N, C] {r}": classification((3,), (r,), p) for r in REDUCTIONS},
      **{f"{kind}, [B, T, C] {r}": classification((2, 3), (r,), p) for r in REDUCTIONS},
      f"{kind}, batch of one, mean": classification((1,), ("mean",), p),
      f"{kind}, N = 0": classification((0,), REDUCTIONS, p),
  }


def ignored(rng, shape, ignore):
  """Which labels of ``shape`` get ignore_index: a random ``ignore`` fraction of them, or the first two
  (``"first 2"``, every row of a first chunk of 2)."""
  if ignore == "first 2":
    return (np.arange(int(np.prod(shape))) < 2).reshape(shape)
  return rng.random(shape) < ignore


def with_options(sample, ignore=0.0, **options):
  """``sample``'s draws (labels last) with each keyword option drawn from its list; with ``ignore`` > 0,
  ignore_index −100 given to that fraction of the int labels (1.0: every one; "first 2": the first two)."""
  def sample_options(rng, dtype):
    (*inputs, labels), kw = sample(rng, dtype)
    kw = {**kw, **{k: v[int(rng.integers(len(v)))] for k, v in options.items()}}
    if ignore:
      labels = np.where(ignored(rng, labels.shape, ignore), -100, labels).astype(labels.dtype)
      kw["ignore_index"] = -100
    return (*inputs, labels), kw
  return sample_options


INT, ALL = classification((3,), probabilities=(False,)), classification((2, 3), probabilities=(False,))
PROB = classification((3,), probabilities=(True,))
CE_OPTIONS = {
    "softcap": with_options(INT, softcap=[1.0, 2.5]),
    "label smoothing 0.1 and 1": with_options(INT, label_smoothing=[0.1, 1.0]),
    "z-loss": with_options(INT, z_loss=[1e-4, 0.5]),
    "ignore_index on some samples": with_options(ALL, ignore=0.5),
    "ignore_index on every sample (mean: NaN, zero gradients)": with_options(INT, ignore=1.0),
    "ignore_index a class (3)": with_options(INT, ignore_index=[3]),
    "all options": with_options(ALL, ignore=0.3, softcap=[2.0], label_smoothing=[0.2], z_loss=[0.1]),
    "probabilities, smoothing, z-loss and softcap": with_options(PROB, softcap=[2.0], label_smoothing=[0.0, 0.3],
                                                                   z_loss=[0.1]),
}
