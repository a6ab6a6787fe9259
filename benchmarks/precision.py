"""The bfloat16 precision contract, measured: every rule's gradient error against the float64 truth.

  python benchmarks/precision.py [--rules attention rms_norm] [--seeds 2] [--all-branches] [--json FILE]

For every rule of ``jaxbp.ops.REGISTRY`` with a floating-point input: inputs drawn by the registry's
samplers in float32 and rounded to bfloat16 (one draw per seed of the rule's ``sample``, or of every
branch with ``--all-branches``), plus the hard cases of ``jaxbp.check.hard_cases`` (cross-entropy with the
true class at p = 0.999 and 1e-6, attention with scores of 30 and more, RMSNorm of rows with mean square
1e4, large activations, a 4096-long reduction). Per input: the max and RMS error of the cotangent relative
to the truth's largest entry, for jaxbp's rule and for ``jax.vjp`` of the reference run in bfloat16
(``jaxbp.check.precision``), the rule's bound (``jaxbp.ops.bf16_bound``) and whether the contract holds
(max ≤ bound and max ≤ autodiff's). The last table is each rule's worst case. Exit status 1 when a rule
breaks its contract.
"""

import argparse
import json
import sys

from jaxbp import ops
from jaxbp.check.precision import measure_rule
from jaxbp.check.precision import within_contract


def _rows(names, seeds, branches):
  for name in names:
    for m in measure_rule(name, tuple(range(seeds)), branches=branches):
      for e in m.errors:
        yield {"rule": name, "case": m.case, "input": e.input, "jaxbp_max": e.rule_max, "jaxbp_rms": e.rule_rms,
               "autodiff_max": e.autodiff_max, "autodiff_rms": e.autodiff_rms, "bound": ops.bf16_bound(name),
               "broken": within_contract(name, e)}


def _line(r):
  return (f"{r['rule']:<28} {r['case'][:40]:<40} {r['input'][:10]:<10} {r['jaxbp_max']:9.2e} {r['jaxbp_rms']:9.2e}"
          f"  {r['autodiff_max']:9.2e} {r['autodiff_rms']:9.2e}  {r['bound']:8.1e}"
          f"  {'BROKEN' if r['broken'] else 'ok'}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rules", nargs="*", default=None, help="rule names (default: every rule)")
  parser.add_argument("--seeds", type=int, default=2, help="draws per sampler (default 2)")
  parser.add_argument("--all-branches", action="store_true",
                      help="every branch of each rule, not only its sample")
  parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.rules or ()) - set(ops.REGISTRY))
  if unknown:
    parser.error(f"--rules: no rule named {', '.join(unknown)} in jaxbp.ops.REGISTRY")
  names = args.rules or sorted(ops.REGISTRY)
  head = (f"{'rule':<28} {'case':<40} {'input':<10} {'jaxbp max':>9} {'rms':>9}  {'autodiff':>9} {'rms':>9}"
          f"  {'bound':>8}  contract")
  print("bfloat16 gradient error relative to the float64 truth's largest entry\n" + head, flush=True)
  rows = []
  for r in _rows(names, args.seeds, args.all_branches):
    rows.append(r)
    print(_line(r), flush=True)
  print("\nworst case per rule\n" + head)
  worst = {}
  for r in rows:
    if r["rule"] not in worst or r["jaxbp_max"] > worst[r["rule"]]["jaxbp_max"]:
      worst[r["rule"]] = r
  for r in worst.values():
    print(_line(r))
  broken = [r for r in rows if r["broken"]]
  print(f"\n{len(rows)} inputs of {len(worst)} rules; {len(broken)} break the contract")
  for r in broken:
    print(f"  {r['rule']} / {r['case']} / {r['input']}: {r['broken']}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"precision": rows}, f, indent=1)
  return 1 if broken else 0


if __name__ == "__main__":
  sys.exit(main())
