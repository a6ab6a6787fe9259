"""jaxbp.ops: every operation with its backward written by hand as a custom_vjp rule.

One idiom for every rule, in four blocks (STYLE.md), e.g. for ``relu``:

    def relu(x: ArrayLike) -> jax.Array:      # public: docstring with the math; validates with _util
      return _relu(float_array("relu", "x", x))   # (float_array, int_array, static_number, axis_index)

    def _relu_fwd(x):                         # -> (out, residuals)
      return jnp.maximum(x, 0), x > 0

    def _relu_bwd(active, g):                 # -> one cotangent per input, each of its input's dtype
      return (jnp.where(active, g, 0),)

    _relu = vjp_rule(relu, _relu_fwd, _relu_bwd)   # the custom_vjp core: value _relu_fwd(x)[0], VJP _relu_bwd
    register(relu, jax.nn.relu, sample, branches=BRANCHES, note="001, 004")

(``ops/_rule.py``). The one exception is ``linear_softmax_cross_entropy``, whose plain evaluation computes
the loss alone rather than ``_fwd(...)[0]``, which would also form the gradients.

No other ``_<op>_forward``-style helper: math shared by several rules is a helper named for the math
(``_stable_log_softmax``, ``_normalize``), never for a rule. ``nondiff_argnums`` only for Python
values (axis, eps, reduction, dtypes); they come first in ``_bwd``'s arguments, as JAX passes them.
"""

from jaxbp.ops._registry import REGISTRY
from jaxbp.ops._registry import Rule
from jaxbp.ops._registry import reference
from jaxbp.ops.activations import elu
from jaxbp.ops.activations import leaky_relu
from jaxbp.ops.activations import log_softmax
from jaxbp.ops.activations import relu
from jaxbp.ops.activations import sigmoid
from jaxbp.ops.activations import softmax
from jaxbp.ops.activations import tanh
from jaxbp.ops.attention import attention
from jaxbp.ops.conv import conv2d
from jaxbp.ops.distillation import linear_distillation_loss
from jaxbp.ops.elementwise import divide
from jaxbp.ops.elementwise import exp
from jaxbp.ops.elementwise import log
from jaxbp.ops.elementwise import negative
from jaxbp.ops.elementwise import power
from jaxbp.ops.elementwise import sqrt
from jaxbp.ops.elementwise import subtract
from jaxbp.ops.embedding import embedding
from jaxbp.ops.gates import add
from jaxbp.ops.gates import maximum
from jaxbp.ops.gates import multiply
from jaxbp.ops.group_norm import group_norm
from jaxbp.ops.linalg import linear
from jaxbp.ops.linalg import matmul
from jaxbp.ops.linear_cross_entropy import linear_softmax_cross_entropy
from jaxbp.ops.llm import geglu
from jaxbp.ops.llm import rope
from jaxbp.ops.llm import swiglu
from jaxbp.ops.losses import l2_penalty
from jaxbp.ops.losses import mse
from jaxbp.ops.losses import multiclass_hinge
from jaxbp.ops.losses import softmax_cross_entropy
from jaxbp.ops.losses import squared_error
from jaxbp.ops.norm import batch_norm
from jaxbp.ops.norm import dropout
from jaxbp.ops.norm import layer_norm
from jaxbp.ops.pool import avg_pool2d
from jaxbp.ops.pool import max_pool2d
from jaxbp.ops.recurrent import lstm
from jaxbp.ops.recurrent import rnn
from jaxbp.ops.rms_norm import rms_norm
from jaxbp.ops.smooth import gelu
from jaxbp.ops.smooth import silu
from jaxbp.ops.smooth import softplus

__all__ = [
    "REGISTRY",
    "Rule",
    "add",
    "attention",
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "divide",
    "dropout",
    "elu",
    "embedding",
    "exp",
    "geglu",
    "gelu",
    "group_norm",
    "l2_penalty",
    "layer_norm",
    "leaky_relu",
    "linear",
    "linear_distillation_loss",
    "linear_softmax_cross_entropy",
    "log",
    "log_softmax",
    "lstm",
    "matmul",
    "max_pool2d",
    "maximum",
    "mse",
    "multiclass_hinge",
    "multiply",
    "negative",
    "power",
    "reference",
    "relu",
    "rms_norm",
    "rnn",
    "rope",
    "sigmoid",
    "silu",
    "softmax",
    "softmax_cross_entropy",
    "softplus",
    "sqrt",
    "squared_error",
    "subtract",
    "swiglu",
    "tanh",
]
