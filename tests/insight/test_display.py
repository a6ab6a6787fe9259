"""What a notebook and a Graphviz user get from a trace: rich HTML, a Figure from draw(), DOT; and the
picture of a fan-out input shows its accumulated gradient and the sum it came from (note 002's x)."""

from matplotlib.figure import Figure

from jaxbp import cli
from jaxbp import trace
from jaxbp.insight.expr import parse
import jaxbp.ops as ops


def _homework():  # note 002's 3.3: x feeds two nodes; its gradient 80 = 64 + 16
  expr = parse("(w1*x**2 + w2*x + b - y)**2")
  return trace(expr.function(ops), w1=2.0, w2=2.0, x=2.0, b=1.0, y=9.0)


def test_notebook_display_and_draw_without_a_path():
  t = _homework()
  page = t._repr_html_()
  assert "<svg" in page and "<table>" in page and "∂L/∂x = 64.00 + 16.00 = 80.00" in page
  fig = t.draw()
  assert isinstance(fig, Figure)
  texts = [x.get_text() for ax in fig.axes for x in ax.texts]
  assert "∂L/∂x = 64.00 + 16.00 = 80.00" in texts


def test_dot_export_labels_every_edge_with_value_and_gradient(tmp_path, capsys):
  path = tmp_path / "g.dot"
  assert cli.main(["trace", "x*x + 3*x", "x=2", "--dot", str(path), "--html", str(tmp_path / "p.html")]) == 0
  dot = path.read_text()
  assert dot.startswith("digraph backprop {") and dot.count(" -> ") == 7  # x·x (2), 3·x (2), the sum (2)
  assert dot.count('"x" -> "s0" [label=<2.00<br/><font color="#c0392b">2.00</font>>]') == 2  # x·x: x each
  assert '"s1:3" -> "s1" [label=<3<br/><font color="#c0392b"></font>>]' in dot  # a constant: no gradient
  assert "http" not in (tmp_path / "p.html").read_text().replace("http://www.w3.org/2000/svg", "")
