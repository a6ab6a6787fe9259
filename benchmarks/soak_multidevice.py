"""Soak test: the transformer trained for whole epochs on several CPU host devices, against one device.

    python benchmarks/soak_multidevice.py                  # 2 epochs of --task reverse (312 steps each), 2 devices
    python benchmarks/soak_multidevice.py --devices 8 --model-parallel 4
    python benchmarks/soak_multidevice.py --short          # what CI runs (tests/train/test_in_flight.py)
    python benchmarks/soak_multidevice.py --short --in-flight 0   # jaxbp 0.2's unbounded dispatch: deadlocks

Until jaxbp.train.IN_FLIGHT bounded the steps dispatched ahead, XLA:CPU deadlocked in the gradient's
all-reduce once 32 steps were in flight on a host with fewer than 2 × devices cores (docs/training.md, "Steps
in flight"), after about 200 steps of the transformer on this 2-core machine. A run here trains the family's
default training config (Adam, lr 3e-3, warmup-cosine, clip 1) twice in one process, on one device and on
the mesh, and exits 0 when both end and their final train and test losses agree to rel 1e-3; it prints one
JSON line. ``--short`` is a smaller transformer (1 layer, width 32) with batches of 256 (each step slower
than its dispatch, as the hazard needs) over 2 epochs of 40 steps. Set before JAX starts, so the script
sets ``--xla_force_host_platform_device_count`` itself (an XLA_FLAGS that names it is kept).
"""

import argparse
import json
import os
import sys
import time


def _args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--devices", type=int, default=2, help="host devices of the mesh (default 2)")
  p.add_argument("--model-parallel", type=int, default=1, help="the mesh's 'model' axis (default 1)")
  p.add_argument("--epochs", type=int, default=2, help="epochs of each run (default 2)")
  p.add_argument("--short", action="store_true", help="the small form CI runs")
  p.add_argument("--in-flight", type=int, default=None,
                 help="override jaxbp.train.IN_FLIGHT; 0 = unbounded (the deadlock, on few cores)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = _args(argv)
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')}"
                               f" --xla_force_host_platform_device_count={args.devices}").strip()
  import jax  # pylint: disable=import-outside-toplevel  (after XLA_FLAGS)

  from jaxbp import models  # pylint: disable=import-outside-toplevel
  from jaxbp import train  # pylint: disable=import-outside-toplevel
  from jaxbp.train import tasks  # pylint: disable=import-outside-toplevel
  if args.in_flight is not None:  # run_steps reads loop's own global (jaxbp.train's is a copy of the name)
    from jaxbp.train import loop  # pylint: disable=import-outside-toplevel
    loop.IN_FLIGHT = args.in_flight or 10**9
  model, batch = (models.Transformer(layers=1, width=32, heads=2, mlp_width=64), 256) if args.short else \
      (models.Transformer(), 64)
  data = tasks.load_task("reverse", num_train=batch * 40, num_test=256) if args.short else tasks.load_task("reverse")
  family = models.family_of(model)
  config = train.TrainConfig(model=model, **dict(family.train_defaults, epochs=args.epochs, batch_size=batch))
  class Quiet(train.FitObserver):  # the dropped partial batch of the full task is no news here
    def on_warning(self, message: str) -> None:
      pass

  runs, seconds = {}, {}
  for name, mesh, parallel in (("one", None, 1),
                               ("mesh", train.make_mesh(args.devices, args.model_parallel), args.model_parallel)):
    t0 = time.perf_counter()
    runs[name] = train.fit(config._replace(model_parallel=parallel), data, mesh=mesh, observer=Quiet()).history[-1]
    seconds[name] = round(time.perf_counter() - t0, 1)
  rel = {k: abs(runs["mesh"][k] - runs["one"][k]) / abs(runs["one"][k]) for k in ("train_loss", "test_loss")}
  ok = all(r <= 1e-3 for r in rel.values())
  print(json.dumps({"ok": ok, "devices": args.devices, "model_parallel": args.model_parallel,
                    "steps": args.epochs * (len(data.y_train) // batch), "rel": rel, "seconds": seconds,
                    "one": runs["one"], "mesh": runs["mesh"], "jax": jax.__version__}))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
