"""jaxbp: backpropagation as explicit Jacobian-transpose rules, in JAX."""

from jaxbp import models
from jaxbp import ops
from jaxbp.check import check_vjp
from jaxbp.insight import cost
from jaxbp.insight.gradflow import plot_grad_norms
from jaxbp.insight.trace import Node
from jaxbp.insight.trace import Trace
from jaxbp.insight.trace import trace
from jaxbp.train import layer_grad_norms

__version__ = "0.3.0"

__all__ = [
    "Node",
    "Trace",
    "check_vjp",
    "cost",
    "layer_grad_norms",
    "models",
    "ops",
    "plot_grad_norms",
    "trace",
]
