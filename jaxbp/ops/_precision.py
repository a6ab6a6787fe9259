"""Each rule's bfloat16 error bound: the precision contract's numbers, beside the registry.

With bfloat16 inputs and cotangent, a rule's gradient is held (``jaxbp.check.precision``) to
``max|d − t| ≤ bound · max|t|`` against the float64 truth ``t`` of the same inputs, on every input, on
its registry branches and hard cases, and to no more than autodiff of its reference in bfloat16.
The unit is bfloat16's machine epsilon ε = 2⁻⁷ = 7.8e-3 (one rounding of the result costs ε/2).
"""

BF16_EPS = 2.0 ** -7

# A rule that is not listed is held to DEFAULT_BF16_BOUND: two roundings (ε) — a result formed in float32
# and rounded once to bfloat16 costs at most ε/2 of the largest entry — so a new rule that accumulates
# in bfloat16 is seen until its own bound is measured and written here.
DEFAULT_BF16_BOUND = BF16_EPS

BF16_BOUNDS: dict[str, float] = {
}


def bf16_bound(name: str) -> float:
  """The largest max-error (relative to the float64 truth's largest entry) allowed to rule ``name`` in bfloat16."""
  return BF16_BOUNDS.get(name, DEFAULT_BF16_BOUND)
