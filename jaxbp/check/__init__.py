"""``check_vjp`` and ``check_jvp``: prove a hand-written derivative rule against a plain reference.

``check_vjp(fn, reference, *args)`` takes a function whose gradient is hand-written (a ``jax.custom_vjp``,
or anything built from them) and a ``reference`` with the same signature that JAX differentiates on its own,
and runs these checks on every differentiable input (every floating-point array leaf of the ``args``
pytrees; integer arrays, PRNG keys and Python scalars are passed through unchanged). By default:

* ``forward``: ``fn(*args)``, and the primal output of ``jax.vjp(fn, *args)`` (what ``value_and_grad``
  returns: other code for a rule whose forward under differentiation forms its gradients), each equal
  ``reference(*args)``, leaf by leaf.
* ``vjp``: the manual ``Jᵀ·u = jax.vjp(fn)(u)`` equals ``jax.vjp(reference)(u)`` for a random cotangent ``u``,
  and has exactly its primal's dtype and shape (a float32 cotangent for a float16 input fails).
* ``finite_differences``: in float64 whatever the inputs' dtype (x64 is switched on for the check and
  restored), ``⟨Jᵀ·u, v⟩`` from the manual rule equals ``⟨u, (f(x + εv) − f(x − εv)) / 2ε⟩`` of ``fn``
  itself (jitted), for ``directions`` random unit directions ``v`` per input: no autodiff at all on the
  right-hand side, and only ``2·directions`` forward calls per input, so it scales to large inputs.
* ``jacobian``: the notes' matrix form. The explicit Jacobian ``J`` of the reference by ``jax.jacfwd``
  (forward mode, independent of any reverse-mode rule), contracted with ``u``, equals the manual ``Jᵀ·u``.
  Skipped, and reported as skipped, when ``J`` has more than ``jacobian_max_size`` entries or when
  ``jacfwd`` (one tangent per input element at once) would pass the memory bound.
* ``transpose``: ``⟨u, J·v⟩`` with ``J·v`` from ``jax.jvp`` of the reference equals ``⟨Jᵀ·u, v⟩``.
* ``jit``: the manual VJP under ``jax.jit`` equals the eager one.
* ``vmap``: the manual VJP ``jax.vmap``-ed over two stacked copies of the inputs (the second one perturbed)
  and of the cotangent equals the VJP of each copy on its own.
* ``linearity``: ``bwd(a·u + b·w) = a·bwd(u) + b·bwd(w)`` (a = 0.75, b = −1.5): a backward using
  ``sign(g)``, ``g**2``, ``g > 0`` or a constant term fails, however close it is at one cotangent.
* ``cotangents``: every array input, integer arrays and PRNG keys included, gets a cotangent of exactly
  its type: its dtype and shape for a float input, ``float0`` for the others (traced, not run).
* ``determinism``: the compiled backward run twice gives the same bits (or within ``nondet_tol``).
* ``residuals``: a note, not a check: the bytes the rule's forward saves for its backward, next to the
  bytes autodiff of the reference saves (the leaves of ``jax.vjp``'s pullback, traced, not run).
* the self-test (``self_test=True``): errors planted in the rule's cotangents (negated, two elements
  swapped, a constant added, one element scaled by 1 + δ) replay the comparisons above; it notes the
  smallest error each check resolves at these inputs and fails a check that cannot see a large one
  (only for the inputs that check ran on: the Jacobian of a large input is skipped, and asks nothing).

These eleven are ``DEFAULT_CHECKS``: the last four cost one more call of the compiled backward, or a
trace, and catch what the classic seven cannot (a backward nonlinear in ``g``, run-time
nondeterminism, a float cotangent for an integer input). On request (``checks=`` naming them, or
``checks="all"``), because each costs a compilation per transform or a subprocess:

* ``second_order`` (also ``second_order=True``): the Hessian-vector product ``∇ₓ⟨∇ₓ⟨u, f⟩, v⟩`` through the
  manual rule equals the reference's; it fails when the backward is not itself differentiable.
* ``transforms``: the manual VJP equals the eager one under ``vmap`` over each input alone, over all
  with a batch of 1 and over the last axis, inside ``jax.checkpoint`` and a ``lax.scan`` body, and its
  derivatives equal the reference's in reverse-over-reverse and forward-over-reverse; forward mode on
  the rule itself (``jvp``), which JAX refuses for a ``custom_vjp``, is reported as unsupported.
* ``sharded`` (not in "all": it starts a subprocess with 8 host devices): the VJP with the inputs split
  on their leading axis over a ``Mesh`` equals the reference's unsharded.

Memory: no check allocates more than ``max(memory_factor × the rule's own memory, memory_floor)``; a
check that would is skipped and reported with the reason. Arrays of more than 4M elements are compared
on the device, never copied to float64 on the host, so a [4096, 32768] rule is checkable.

bfloat16 and float16: when the coarsest differentiable input is one of them, ``forward``, ``vjp``,
``jacobian`` and ``transpose`` (and ``check_jvp``'s ``forward``, ``jvp`` and ``vjp``) compare the rule
not with the reference run in that dtype, whose rounding is as large as the rule's or larger, but with
the float64 truth (the reference on the same inputs, cotangent and tangents upcast; float32 where an
input is a PRNG key and x64 is off, since ``jax.random`` draws another stream with x64), and pass when
``max|d − t| ≤ bound·max|t|``: the rule's precision contract (``jaxbp.ops.bf16_bound``; in float16,
where none is measured, the default bound in float16's ε, 9.8e-4). See ``jaxbp.check._truth``. The
checks of the rule against itself (``jit``, ``vmap``, ``linearity``) keep the dtype's tolerance, as do
``second_order``, ``transforms`` and ``sharded`` (still against the reference in the inputs' dtype).

Errors: arrays are compared element by element: element i passes when ``|got_i − want_i| ≤ atol +
rtol·|want_i| + FLOOR_ULPS·ε·max|want|`` (its own size, plus a floor tied to the dtype and the scale), so a
1% error in one small element of 4096 fails. The report's ``abs err`` is ``max|got − want|`` and ``rel
err`` that over ``max|want|``. For the inner-product checks the scale is the Cauchy–Schwarz bound of
the inner product (``‖Jᵀ·u‖·‖v‖``) and a check passes when ``abs ≤ atol + rtol·scale``. NaN where the
expected value is NaN too counts as agreement: elementwise, and in the inner-product checks, which
leave out the outputs where the reference is NaN and the inputs where its VJP is; NaN or inf anywhere
else is an infinite error. With inputs of several floating dtypes (a bfloat16 prediction, a float32
target) every comparison is held to the coarsest input's tolerance: a float32 value computed from a
bfloat16 one carries bfloat16's rounding. Each gradient must still have exactly its own input's dtype.

Why this is stronger than ``jax.test_util.check_grads``: ``check_grads`` compares a function's VJP with
finite differences of the same function in the inputs' own dtype (float32 differences need a tolerance of
2e-3, so an error of 1e-3 passes), along one random direction shared by all inputs (a wrong gradient for one
input is blurred into a single scalar), never against an independent reference, never under ``jit`` or
``vmap``, and its default forward mode cannot run on a ``custom_vjp`` at all. ``check_vjp`` compares with the
reference at the inputs' dtype, with finite differences in float64, per input, and names the input, the
check and the size of the error when one fails. An error raised by the rule (for instance JAX's "bwd rule
must produce an output with the same type" when a cotangent has the wrong shape) becomes a failed check
naming the input it concerns. ``benchmarks/checker_power.py`` measures the difference.

``check_jvp(fn, reference, *args)`` does the same for a ``jax.custom_jvp``: see ``jaxbp.check._jvp``.
"""

from jaxbp.check._compare import FD_TOLERANCE
from jaxbp.check._compare import FLOOR_ULPS
from jaxbp.check._compare import TOLERANCES
from jaxbp.check._compare import Entry
from jaxbp.check._compare import Report
from jaxbp.check._jvp import JVP_CHECKS
from jaxbp.check._jvp import check_jvp
from jaxbp.check._vjp import ALL_CHECKS
from jaxbp.check._vjp import CHECKS
from jaxbp.check._vjp import DEFAULT_CHECKS
from jaxbp.check._vjp import EXTRA_CHECKS
from jaxbp.check._vjp import check_vjp

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "DEFAULT_CHECKS",
    "EXTRA_CHECKS",
    "Entry",
    "FD_TOLERANCE",
    "FLOOR_ULPS",
    "JVP_CHECKS",
    "Report",
    "TOLERANCES",
    "check_jvp",
    "check_vjp",
]
