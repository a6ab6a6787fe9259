"""Write your own custom_vjp rule and prove it with check_vjp: a numerically stable softplus.

softplus(x) = log(1 + eˣ) written as it reads overflows for large x, and JAX's derivative of that
expression, eˣ/(1 + eˣ), becomes inf/inf = nan. The rule below computes the same function without
ever exponentiating a large number, states its derivative σ(x) by hand, and check_vjp proves it
against JAX's own ``jax.nn.softplus``. A copy with a plausible slip planted in its backward (σ′ instead
of σ) shows what a failed proof looks like; the script says that failure is planted, and what it
teaches. docs/custom-rule.md walks through this file.

Run: python examples/custom_rule_softplus.py   (exits non-zero if the proof or the planted bug's
detection goes wrong; tests/test_docs.py runs it)
"""

import re
import sys

import jax
import jax.numpy as jnp

from jaxbp import check_vjp

# --------------------------------------------------------------------------- 1. the public op

def softplus(x):
  """z = log(1 + eˣ), computed as max(x, 0) + log(1 + e^{−|x|}) so no exponential overflows.

  Local derivative: ∂z/∂x = eˣ/(1 + eˣ) = σ(x). VJP: dx = g · σ(x). The rule keeps σ(x) only,
  computed by ``lax.logistic``, which is finite for any x. The function is smooth everywhere, so
  there is no choice to make at a kink.

  Args:
    x: float array of any shape.
  """
  if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
    raise TypeError(f"softplus: argument 'x' must be a floating-point array, got dtype {jnp.result_type(x)}")
  return _softplus(x)


# ------------------------------------------------------- 2. the forward, its residuals, the backward

def _stable(x):  # the forward formula, written once for the rule, its fwd and the slip
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@jax.custom_vjp
def _softplus(x):
  return _stable(x)


def _softplus_fwd(x):  # x -> (z, residuals)
  return _stable(x), jax.lax.logistic(x)  # σ(x): all the backward needs


def _softplus_bwd(s, g):  # (residuals, cotangent of z) -> one cotangent per input
  dx = g * s  # dx = g · σ(x)
  return (dx,)


_softplus.defvjp(_softplus_fwd, _softplus_bwd)


# ---------------------------------------------------- 3. the same rule with a slip in its backward

@jax.custom_vjp
def _softplus_slip(x):
  return _stable(x)


def _softplus_slip_bwd(s, g):
  return (g * s * (1 - s),)  # σ′(x) = σ(1 − σ): sigmoid's own rule, one derivative too many


_softplus_slip.defvjp(_softplus_fwd, _softplus_slip_bwd)


def softplus_slip(x):
  """``softplus`` with the planted bug dx = g · σ(x)(1 − σ(x))."""
  return _softplus_slip(x)


# ------------------------------------------------------------------------------------ the run

PLANTED = ("The failure below is PLANTED, on purpose: softplus_slip's backward returns σ′(x) = σ(1 − σ)\n"
           "instead of σ(x). check_vjp must fail it, and this script exits 0 only if it does.")


def teaches(report, x):
  """What the failed report teaches, read off the report itself (which checks failed, and where)."""
  passed = list(dict.fromkeys(e.check for e in report.entries if e.passed))  # one name per check
  failed = [e.check for e in report.failures if e.check != "finite_differences"]
  worst = next(e for e in report.failures if e.check == "vjp")
  i = int(re.search(r"index \((\d+),\)", worst.detail)[1])
  s = float(jax.nn.sigmoid(x[i]))
  return (f"What the report teaches: {', '.join(passed)} pass, so the forward is right and the wrong backward\n"
          f"is wrong consistently; {', '.join(failed)} fail against the reference, and finite_differences\n"
          f"fails with no reference at all. The largest error sits at index ({i},), x = {float(x[i]):g}, where\n"
          f"the rule returned u·σ′(x) = u·{s * (1 - s):.3g} instead of u·σ(x) = u·{s:.3g} (u: the random cotangent).")


def naive(x):
  return jnp.log(1 + jnp.exp(x))


def compare():
  """Forward values and gradients of the naive formula and of the rule, in float32."""
  xs = jnp.array([-100.0, -1.0, 0.0, 1.0, 100.0], dtype=jnp.float32)
  d_naive = jax.vmap(jax.grad(naive))(xs)
  d_rule = jax.vmap(jax.grad(softplus))(xs)
  print(f"{'x':>7} {'log(1+eˣ)':>12} {'its jax.grad':>13} {'softplus':>12} {'rule: σ(x)':>12}")
  for x, a, da, b, db in zip(xs, naive(xs), d_naive, softplus(xs), d_rule):
    print(f"{float(x):7.1f} {float(a):12.6g} {float(da):13.6g} {float(b):12.6g} {float(db):12.6g}")
  return bool(jnp.all(jnp.isfinite(softplus(xs))) and jnp.all(jnp.isfinite(d_rule)))


def main():
  finite = compare()
  x = jnp.array([-30.0, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0], dtype=jnp.float32)
  print()
  report = check_vjp(softplus, jax.nn.softplus, x, second_order=True)
  print(report)
  print()
  print(PLANTED)
  try:
    check_vjp(softplus_slip, jax.nn.softplus, x)
  except AssertionError as failure:
    print(failure)
    print(teaches(failure.report, x))
    caught = True
  else:
    print("check_vjp passed the planted bug: it should not have")
    caught = False
  return 0 if finite and report.passed and caught else 1


if __name__ == "__main__":
  sys.exit(main())
