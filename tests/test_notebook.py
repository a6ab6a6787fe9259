"""examples/notebooks/backprop.ipynb runs top to bottom in a fresh kernel and shows the notes' numbers:
note 001's circuit (0.73; -0.20, 0.39, -0.39, -0.59, 0.20) and note 004's 2-2-1 network, so it cannot rot;
tensors.ipynb, the same on arrays (note 001's matrices, note 004's δ vectors, attention, a model's step)."""

import json
import os
import pathlib
import sys

import pytest

import jaxbp

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install 'jaxbp[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install 'jaxbp[test]')")
import nbformat  # noqa: E402  (installed with nbclient)

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "examples" / "notebooks"
KERNEL = "jaxbp-test"


def _kernel_spec(folder):
  """A kernel running this very interpreter with this jaxbp first on its path, whatever kernels the
  machine has registered (a fresh venv's ``python3`` may start another ``python`` found on PATH)."""
  spec = folder / "kernels" / KERNEL
  spec.mkdir(parents=True)
  here = str(pathlib.Path(jaxbp.__file__).parent.parent)
  path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "jaxbp test", "language": "python", "env": {"PYTHONPATH": path}}))


def _outputs(cell):
  """The cell's text: printed streams, and every text and HTML representation it displayed."""
  parts = []
  for out in cell.get("outputs", []):
    if out["output_type"] == "stream":
      parts.append(out["text"])
    elif out["output_type"] in ("execute_result", "display_data"):
      parts += [v for k, v in out["data"].items() if k.startswith("text/")]
  return "".join(parts)


def _execute(name, tmp_path_factory):
  folder = tmp_path_factory.mktemp("jupyter")
  _kernel_spec(folder)
  work = folder / "cwd"
  work.mkdir()
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("JUPYTER_PATH", str(folder))
    nbclient.NotebookClient(nb, timeout=180, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}}).execute()
  assert not list(work.iterdir()), "the notebook wrote into its folder"
  return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  return _execute("backprop.ipynb", tmp_path_factory)


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
  return _execute("tensors.ipynb", tmp_path_factory)


def _cell(nb, start):
  found = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start)]
  assert len(found) == 1, f"no single code cell starts with {start!r}"
  return found[0]


@pytest.mark.parametrize("notebook", ["executed", "tensors"])
def test_every_cell_ran_without_a_warning(notebook, request):
  for cell in request.getfixturevalue(notebook).cells:
    if cell.cell_type == "code":
      assert cell.execution_count is not None
      errors = [o for o in cell.outputs if o["output_type"] == "error" or o.get("name") == "stderr"]
      assert not errors, f"{cell.source[:60]!r}: {errors}"


def test_note_001_circuit_shows_the_notes_figures(executed):
  figures = _outputs(_cell(executed, 'print(f"L = '))
  assert "L = 0.73" in figures
  for name, grad in [("w0", "-0.20"), ("x0", "0.39"), ("w1", "-0.39"), ("x1", "-0.59"), ("w2", "0.20")]:
    assert f"∂L/∂{name} = {grad}   (jax.grad: {grad})" in figures
  walk = _outputs(_cell(executed, "for node in reversed(t.nodes)")).splitlines()
  assert len(walk) == 9 and walk[0].startswith(" L sigmoid")  # from L back to the inputs
  assert "× local ∂s1/∂x1 = -3.0000  = downstream ∂L/∂x1 = -0.5898" in walk[6]  # multiply swaps
  shown = _outputs(_cell(executed, "def circuit"))  # the trace itself: the graph, then its tables
  assert "<svg" in shown and "<table>" in shown
  drawn = _cell(executed, "fig = t.draw(")
  assert any("image/png" in o.get("data", {}) for o in drawn.outputs), "draw() showed no picture"
  page = _outputs(_cell(executed, "page = t.to_html("))
  assert "<iframe srcdoc=" in page and "Next" in page


def test_note_004_network_shows_the_exact_values_beside_the_notes(executed):
  values = _outputs(_cell(executed, "z1, h, z2, o = "))
  for line in ("z1 = 0.3825, 0.3900", "h  = 0.594476, 0.596283", "z2 = 1.106118", "E  = 0.274840",
               "δ2 = ∂E/∂b2 = 0.138491", "∂E/∂w2 = 0.082330, 0.082580", "δ1 = ∂E/∂b1 = 0.013355, 0.015003"):
    assert line in values
  deltas = _outputs(_cell(executed, "d2 = "))
  assert deltas.count("δ formulas = rules: True") == 4 and "False" not in deltas
  step = _outputs(_cell(executed, "new = "))
  assert "w2 = 0.358835, 0.408710" in step and "w11 = 0.149666, w21 = 0.249332" in step
  assert "E: 0.274840 → 0.258039" in step


def test_check_vjp_report_shows_as_a_table_of_passed_checks(executed):
  report = _outputs(_cell(executed, "def reference_network"))
  assert "check_vjp(network vs reference_network): all" in report and "checks passed" in report
  assert '<span class="ok">ok</span>' in report and "FAIL" not in report


def test_tensors_notebook_shows_shapes_deltas_attention_and_memory(tensors):
  shapes = _outputs(_cell(tensors, "matmul = next("))
  assert "w: (3, 4)  ∂L/∂w: (3, 4)  same shape: True" in shapes and "dW = Xᵀ·dY: True" in shapes
  assert "<iframe srcdoc=" in _outputs(_cell(tensors, "x = jnp.arange"))  # a tensor trace displays as its page
  checked = _outputs(_cell(tensors, "framed(t.to_html("))
  assert "✓ check_vjp passed" in checked and "check_vjp FAILED" not in checked
  deltas = _outputs(_cell(tensors, "with jax.enable_x64(True):\n  params"))
  assert "δ2 = [0.138491]" in deltas and "δ1 = [0.013355 0.015003]" in deltas
  flash = _outputs(_cell(tensors, "with jax.enable_x64(True):\n  rng"))
  assert "jax.grad of the plain attention: True" in flash and "the rule 44 (O, lse, O − V_t, top key)" in flash
  model = _outputs(_cell(tensors, "step = model_step"))
  assert "['softmax_cross_entropy', 'linear', 'relu', 'linear']" in model and "residuals: manual rules" in model
