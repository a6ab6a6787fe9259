"""jaxbp: backpropagation as explicit Jacobian-transpose rules, in JAX."""

from jaxbp import ops

__version__ = "0.1.0"

__all__ = [
    "ops",
]
