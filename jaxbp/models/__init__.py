"""jaxbp.models: pure-function models over plain pytrees, built from an op namespace (``ops=``)."""

from jaxbp.models.mlp import ACTIVATIONS
from jaxbp.models.mlp import INITS
from jaxbp.models.mlp import MLPConfig
from jaxbp.models.mlp import init_mlp
from jaxbp.models.mlp import mlp_apply
from jaxbp.models.notes import affine_apply
from jaxbp.models.notes import init_affine
from jaxbp.models.notes import init_neuron
from jaxbp.models.notes import init_proportional
from jaxbp.models.notes import init_quadratic
from jaxbp.models.notes import neuron_apply
from jaxbp.models.notes import proportional_apply
from jaxbp.models.notes import quadratic_apply

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "MLPConfig",
    "affine_apply",
    "init_affine",
    "init_mlp",
    "init_neuron",
    "init_proportional",
    "init_quadratic",
    "mlp_apply",
    "neuron_apply",
    "proportional_apply",
    "quadratic_apply",
]
