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
