"""jaxbp.ops: every operation with its backward written by hand as a custom_vjp rule."""

from jaxbp.ops._registry import REGISTRY
from jaxbp.ops._registry import Rule
from jaxbp.ops._registry import reference

__all__ = [
    "REGISTRY",
    "Rule",
    "reference",
]
