"""jaxbp.models: pure-function models over plain pytrees, built from an op namespace (``ops=``).

Every family ``jaxbp train`` can train is registered by its own module through :func:`register`, whose
contract is the docstring of ``jaxbp/models/_registry.py``: one config class per family, named as the
family is (``MLP``, ``Linear``, ``CNN``, ``RNN``, ``LSTM``, ``Transformer``, ``Llama``), one validation hook
``check``, and one meaning of weight (:func:`is_weight`). ``MLPConfig`` and ``RecurrentConfig`` are the
lower-level architectures that ``init_mlp``/``mlp_apply`` and the recurrent functions take.
"""

from jaxbp.models._registry import HEADS
from jaxbp.models._registry import KINDS
from jaxbp.models._registry import ConfigError
from jaxbp.models._registry import DataSpec
from jaxbp.models._registry import Family
from jaxbp.models._registry import check_config
from jaxbp.models._registry import check_value
from jaxbp.models._registry import family_of
from jaxbp.models._registry import field_types
from jaxbp.models._registry import from_json
from jaxbp.models._registry import get
from jaxbp.models._registry import is_weight
from jaxbp.models._registry import names
from jaxbp.models._registry import register
from jaxbp.models._registry import to_json
from jaxbp.models._registry import weights_mask
from jaxbp.models.cnn import CNN
from jaxbp.models.cnn import cnn_apply
from jaxbp.models.cnn import init_cnn
from jaxbp.models.llama import Llama
from jaxbp.models.mlp import ACTIVATIONS
from jaxbp.models.mlp import INITS
from jaxbp.models.mlp import MLP
from jaxbp.models.mlp import Linear
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
from jaxbp.models.recurrent import LSTM
from jaxbp.models.recurrent import RNN
from jaxbp.models.transformer import Transformer
from jaxbp.models.transformer import TransformerConfig

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "ConfigError",
    "DataSpec",
    "Family",
    "HEADS",
    "INITS",
    "KINDS",
    "LSTM",
    "Linear",
    "Llama",
    "MLP",
    "MLPConfig",
    "RNN",
    "Transformer",
    "TransformerConfig",
    "affine_apply",
    "check_config",
    "check_value",
    "cnn_apply",
    "family_of",
    "field_types",
    "from_json",
    "get",
    "init_affine",
    "init_cnn",
    "init_mlp",
    "init_neuron",
    "init_proportional",
    "init_quadratic",
    "is_weight",
    "mlp_apply",
    "names",
    "neuron_apply",
    "proportional_apply",
    "quadratic_apply",
    "register",
    "to_json",
    "weights_mask",
]
