"""Shared test configuration: a hypothesis profile per environment, and float64 on demand."""

import importlib.metadata
import os

# Two XLA compile settings for the tests, since nearly every test is compile-bound (small shapes compiled
# once); each is kept as the user set it if XLA_FLAGS already names it. Set before JAX creates its CPU client
# (subprocesses inherit it).
# - The back-end (LLVM) optimisation level 0: half the back-end compile (recurrent tests: 20 s -> 11 s).
# - XLA CPU's classic loop and elemental fusion emitters instead of the newer MLIR ones: half again (the
#   registry's branch checks for five rules: 18.9 s -> 9.5 s of back-end compile).
# The HLO is the same either way; results differ only by float round-off (no fast-math in any of them), which
# no test may depend on. The cost: the suite does not run the code generator users run by default.
# XLA aborts on a flag it does not know, so the second is given only to the jaxlib it was measured on or later.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
if ("xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "")
    and tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2]) >= (0, 10)):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false".strip()

import hypothesis
import jax
import pytest

# CI runs few examples per property (the suite must stay under five minutes on two cores); a developer
# can ask for more with HYPOTHESIS_PROFILE=thorough.
# Shrinking is off by default: every example recompiles, and a failing seed is reported as it is.
hypothesis.settings.register_profile(
    "default", max_examples=1, deadline=None, derandomize=True,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("thorough", max_examples=25, deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def x64():
  """Runs a test with float64 enabled, and restores the previous setting after it."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def jaxbp_cmd(monkeypatch, capsys):
  """``jaxbp ARGV`` run in this process with only ``train`` loaded: a function returning (exit status,
  stderr lines); what the command printed to stdout is then its ``stdout`` attribute."""
  from jaxbp import cli  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(cli, "COMMANDS", {"train": cli.COMMANDS["train"]})

  def run(*argv):
    try:
      status = cli.main(list(argv))
    except SystemExit as e:  # argparse
      status = e.code
    captured = capsys.readouterr()
    run.stdout = captured.out
    return status, captured.err.strip().splitlines()
  return run


_COMPILED: dict = {}


@pytest.fixture
def shared_compiles(monkeypatch):
  """``train.fit`` reuses the programs an earlier fit in this process compiled for the same config, data
  shapes, step count, mesh and float64 setting (fit compiles ahead of time, which jit's cache does not
  share): a test that fits one config several times (a run, its interruption, its resume) compiles once.
  Compiling is deterministic in those inputs, so this changes no result; a resume asks for no initialiser
  and takes the step and evaluation of a fresh run's."""
  from jaxbp.train import loop  # pylint: disable=import-outside-toplevel
  from jaxbp.train.step import split_arrays  # pylint: disable=import-outside-toplevel
  compile_ = loop._compile  # pylint: disable=protected-access

  def memo(config, spec, data, steps, mesh, init):
    shapes = tuple((a.shape, str(a.dtype)) for split in ("train", "test") for a in split_arrays(data, split))
    key = (config, spec, shapes, steps, mesh, bool(jax.config.jax_enable_x64))
    found = _COMPILED.get((key, True)) or (None if init else _COMPILED.get((key, False)))
    if found is None:
      found = _COMPILED[key, init] = compile_(config, spec, data, steps, mesh, init)
    return found if init else found._replace(init=None)
  monkeypatch.setattr(loop, "_compile", memo)
