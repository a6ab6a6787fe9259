"""The interactive page in a real browser (Debian's chromium, driven by Playwright): stepping the backward
pass of note 001's circuit shows each gradient only once the step that produces it has been taken."""

import os
import re
import shutil

import pytest

from jaxbp import trace
import jaxbp.ops as ops

CHROMIUM = os.environ.get("JAXBP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Each input's gradient (note 001: -0.20, 0.39, -0.39, -0.59, 0.20) and the step that produces it; the
# steps go L (σ), s3 (+ w2), s2 (+), s1 (w1 × x1), s0 (w0 × x0).
DUE = {"-0.20": 5, "0.39": 5, "-0.39": 4, "-0.59": 4, "0.20": 1}


def _shown(text, number):
  return re.search(rf"(?<![\d.\-]){re.escape(number)}(?!\d)", text) is not None


def _browser():
  sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser at {CHROMIUM}: apt-get install -y chromium (or set JAXBP_CHROMIUM)")
  return sync_api


def test_stepping_shows_each_gradient_only_after_its_step(tmp_path):
  sync_api = _browser()
  t = trace(lambda w0, x0, w1, x1, w2: ops.sigmoid(w0 * x0 + w1 * x1 + w2),
            w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
  page_file = tmp_path / "page.html"
  page_file.write_text(t.to_html("sigmoid(w0*x0 + w1*x1 + w2)"), encoding="utf-8")
  assert "http" not in page_file.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    page.goto(page_file.as_uri())
    for step in range(6):
      text = page.inner_text("body")
      assert f"step {step} of 5" in text
      for number, due in DUE.items():
        assert _shown(text, number) == (step >= due), (number, step, text)
      if step == 4:  # s1's step: upstream × local = downstream, for both of its inputs
        assert "0.20 × local ∂s1/∂w1 = -2.00 = downstream ∂L/∂w1 = -0.39" in text
      if step < 5:
        (page.keyboard.press("ArrowRight") if step % 2 else page.click("#next"))
    page.keyboard.press("ArrowLeft")
    text = page.inner_text("body")
    assert "step 4 of 5" in text and not _shown(text, "-0.20")
    if os.environ.get("JAXBP_SCREENSHOT"):  # docs/img/backprop_html.png is taken this way
      page.screenshot(path=os.environ["JAXBP_SCREENSHOT"], full_page=True)
    page.click("#play")
    page.wait_for_function("document.body.innerText.includes('step 5 of 5')", timeout=5000)
    browser.close()


@pytest.mark.parametrize("width", [1280, 800])
def test_the_graph_fits_the_window(tmp_path, width):
  """The whole picture, L's node and its value included, lies inside a 1280- and an 800-pixel window: the
  SVG scales to its container (before, the page at 1280 pixels cut off the right of the graph)."""
  sync_api = _browser()
  t = trace(lambda w0, x0, w1, x1, w2: ops.sigmoid(w0 * x0 + w1 * x1 + w2),
            w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
  page_file = tmp_path / "page.html"
  page_file.write_text(t.to_html("sigmoid(w0*x0 + w1*x1 + w2)"), encoding="utf-8")
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": width, "height": 720})
    page.goto(page_file.as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    right = page.evaluate("Math.max(...[...document.querySelectorAll('svg text')]"
                          ".map(e => e.getBoundingClientRect().right))")
    assert 0.6 * width < right <= width, right  # fills the window without spilling over
    browser.close()


def _example(name):
  import importlib.util
  import pathlib
  script = pathlib.Path(__file__).parents[2] / "examples" / name
  spec = importlib.util.spec_from_file_location(script.stem, script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _two_two_one_page(path):
  """examples/08_two_two_one.py's page of note 004's network as matrices (without its checks: time)."""
  import jax
  module = _example("08_two_two_one.py")
  with jax.enable_x64(True):
    t = trace(module.loss, **module.PARAMS, x=module.X, t=module.T)
    module.write_page(t, path, check=False)


def _errors(page):
  """The console errors and uncaught exceptions of ``page``, as they come."""
  errors = []
  page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
  page.on("pageerror", lambda e: errors.append(str(e)))
  return errors


def _step_to_end(page, last):
  """Steps the page to its end, half by the button and half by the arrow key; the text of every step."""
  texts = [page.inner_text("body")]
  for k in range(1, last + 1):
    page.keyboard.press("ArrowRight") if k % 2 else page.click("#next")
    texts.append(page.inner_text("body"))
    assert f"step {k} of {last}" in texts[-1]
  return texts


def test_tensor_pages_step_to_the_end_with_shapes_formulas_and_bytes(tmp_path):
  import jax.numpy as jnp
  sync_api = _browser()
  matmul_page, net_page = tmp_path / "matmul.html", tmp_path / "net.html"
  x, w, y = jnp.ones((2, 3)), jnp.ones((3, 4)) / 4, jnp.zeros((2, 4))
  matmul_page.write_text(trace(lambda x, w, y: ops.mse(ops.matmul(x, w), y), x=x, w=w, y=y).to_html(),
                         encoding="utf-8")
  _two_two_one_page(net_page)
  flash_page, model_page = tmp_path / "flash.html", tmp_path / "model.html"
  from jaxbp import models
  from jaxbp.insight import model_step
  step = model_step.trace_model("mlp", models.MLP(hidden=(4,), dropout=0.0), batch_size=2)
  model_page.write_text(model_step.model_html(step, check=False), encoding="utf-8")
  assert _example("15_flash_attention.py").main(["--html", str(flash_page)]) == 0
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    for width in (1280, 800):
      page = browser.new_page(viewport={"width": width, "height": 720})
      errors = _errors(page)
      page.goto(matmul_page.as_uri())
      texts = _step_to_end(page, 3)
      assert "dX = dY·Wᵀ" in texts[2] and "dW = Xᵀ·dY" in texts[2]  # the matmul's step
      assert "∂L/∂w float32[3, 4] = the shape of w" in texts[2]
      assert "the rule 72 bytes" in texts[2] and "✓ check_vjp passed" in texts[2]
      page.goto(net_page.as_uri())
      texts = _step_to_end(page, 6)
      assert "δ1 = (δ2·W2ᵀ) ⊙ σ′(z1)" in texts[4] and "δ1 = [0.013355, 0.015003]" in texts[4]
      assert "∂L/∂w1 float64[2, 2] = the shape of w1" in texts[5] and "the rule 64 bytes" in texts[5]
      assert "0.000668" in texts[5]  # ∂E/∂w11, the note's figure
      page.goto(flash_page.as_uri())
      texts = _step_to_end(page, 22)
      assert "Forward, block (1, 0)" in texts[2] and "rescale [2]" in texts[2]
      assert "Backward, block (3, 0)" in texts[15] and "P = exp(S − lse)" in texts[15]
      assert "the rule 44 floats (O, lse, O − V_t, top key)" in texts[22] and "dV [8, 2]" in texts[22]
      page.goto(model_page.as_uri())
      texts = _step_to_end(page, 5)  # softmax_cross_entropy, linear, relu, linear, then the memory
      assert "∂L/∂layers_0_w float32[64, 4] = the shape of layers_0_w" in texts[4] and "dW = Xᵀ·dY" in texts[4]
      assert f"{step.memory['residuals'][0]:,} bytes" in texts[5] and "jax.grad" in texts[5]
      assert page.evaluate("document.documentElement.scrollWidth") <= width
      assert not errors, errors
      page.close()
    browser.close()
