"""jaxbp: backpropagation as explicit Jacobian-transpose rules, in JAX."""

from jaxbp import models
from jaxbp import ops
from jaxbp.check import check_vjp

__version__ = "0.1.0"

__all__ = [
    "check_vjp",
    "models",
    "ops",
]
