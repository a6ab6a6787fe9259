"""The samplers of the rule registry, public: what a rule's entry in ``REGISTRY`` draws its inputs with,
and what ``jaxbp.testing`` and ``jaxbp check`` draw a user's inputs with.

A sampler is ``sampler(rng: np.random.Generator, dtype) -> (args, kwargs)``; these are its pieces.
"""

from jaxbp.ops._registry import Sampler
from jaxbp.ops._registry import any_branch
from jaxbp.ops._registry import broadcastable_to
from jaxbp.ops._registry import random_shape
from jaxbp.ops._registry import uniform
from jaxbp.ops._registry import zero_size

__all__ = ["Sampler", "any_branch", "broadcastable_to", "random_shape", "uniform", "zero_size"]
