"""Each rule's bfloat16 error bound: the precision contract's numbers, beside the registry.

With bfloat16 inputs and cotangent, a rule's gradient is held (``jaxbp.check.precision``) to
``max|d − t| ≤ bound · max|t|`` against the float64 truth ``t`` of the same inputs, on every input, on
its registry branches and hard cases, and to no more than autodiff of its reference in bfloat16.
The unit is bfloat16's machine epsilon ε = 2⁻⁷ = 7.8e-3 (one rounding of the result costs ε/2).
"""

BF16_EPS = 2.0 ** -7
# One rounding of a float32 result to bfloat16 costs at most half an ulp, 2⁻⁸ = 3.9e-3 of the largest entry;
# with the float32 arithmetic before it (a 4096-long sum, a normalisation of rows of mean 100) a rule that
# computes in float32 and rounds each cotangent once stays within 5e-3. Measured (benchmarks/precision.py,
# every branch at seed 0, and the hard cases; --seeds 2 on the samples): the largest is 3.75e-3 (multiclass_hinge),
# and none is worse than autodiff in bfloat16.
ONE_ROUNDING = 5e-3

# A rule not listed here (one registered since) is held to DEFAULT_BF16_BOUND = ε, two roundings: looser
# than ONE_ROUNDING until its own bound is measured and written here; the contract's other half (no worse
# than autodiff in bfloat16) holds it from the start.
DEFAULT_BF16_BOUND = BF16_EPS

# Every rule below computes in float32 at least (``vjp_rule``'s wrapper, or its own float32 work) and rounds
# once: ONE_ROUNDING. A rule with another bound says why beside its entry.
BF16_BOUNDS: dict[str, float] = {
    "add": ONE_ROUNDING,
    "attention": ONE_ROUNDING,
    "avg_pool2d": ONE_ROUNDING,
    "batch_norm": ONE_ROUNDING,
    "conv2d": ONE_ROUNDING,
    "divide": ONE_ROUNDING,
    "dropout": ONE_ROUNDING,
    "elu": ONE_ROUNDING,
    "embedding": ONE_ROUNDING,
    "exp": ONE_ROUNDING,
    "geglu": ONE_ROUNDING,
    "gelu": ONE_ROUNDING,
    "group_norm": ONE_ROUNDING,
    "l2_penalty": ONE_ROUNDING,
    "layer_norm": ONE_ROUNDING,
    "leaky_relu": ONE_ROUNDING,
    "linear": ONE_ROUNDING,
    "linear_distillation_loss": ONE_ROUNDING,
    "linear_softmax_cross_entropy": ONE_ROUNDING,
    "log": ONE_ROUNDING,
    "log_softmax": ONE_ROUNDING,
    "lstm": ONE_ROUNDING,
    "matmul": ONE_ROUNDING,
    "max_pool2d": ONE_ROUNDING,
    "maximum": ONE_ROUNDING,
    "mse": ONE_ROUNDING,
    "multiclass_hinge": ONE_ROUNDING,
    "multiply": ONE_ROUNDING,
    "negative": ONE_ROUNDING,
    "power": ONE_ROUNDING,
    "relu": ONE_ROUNDING,
    "rms_norm": ONE_ROUNDING,
    "rnn": ONE_ROUNDING,
    "rope": ONE_ROUNDING,
    "sigmoid": ONE_ROUNDING,
    "silu": ONE_ROUNDING,
    "softmax": ONE_ROUNDING,
    "softmax_cross_entropy": ONE_ROUNDING,
    "softplus": ONE_ROUNDING,
    "sqrt": ONE_ROUNDING,
    "squared_error": ONE_ROUNDING,
    "subtract": ONE_ROUNDING,
    "swiglu": ONE_ROUNDING,
    "tanh": ONE_ROUNDING,
}


def bf16_bound(name: str) -> float:
  """The largest max-error (relative to the float64 truth's largest entry) allowed to rule ``name`` in bfloat16."""
  return BF16_BOUNDS.get(name, DEFAULT_BF16_BOUND)
