"""One training step of a registered model family, traced rule call by rule call (jaxbp.insight.model_step),
and ``jaxbp trace --model``'s errors."""

import numpy as np
import pytest

from jaxbp import models
from jaxbp.cli import main
from jaxbp.insight import model_step
from jaxbp.insight import rule_facts


@pytest.fixture(scope="module")
def mlp_step():
  return model_step.trace_model("mlp", models.MLP(hidden=(4,), dropout=0.0), batch_size=2)


def test_the_rule_calls_come_in_backward_order_with_each_gradient_in_its_weights_shape(mlp_step):
  calls = model_step.rule_calls(mlp_step.trace)
  assert [n.op for n in calls] == ["softmax_cross_entropy", "linear", "relu", "linear"]
  for node in calls[1::2]:  # the two linear layers: x [2, D] · w [D, M] + b [M]
    x, w, b = node.args
    dx, dw, db = node.downstream
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
  for name, grad in mlp_step.trace.grads.items():  # the trace's gradients are jax.grad's
    np.testing.assert_allclose(grad, mlp_step.trace.autodiff[name], rtol=1e-5, atol=1e-7)


def test_the_memory_is_what_jax_vjp_keeps_on_each_side(mlp_step):
  manual, autodiff = mlp_step.memory["residuals"]
  calls = model_step.rule_calls(mlp_step.trace)
  per_rule = sum(rule_facts.residual_bytes(rule_facts.pair(n)[0], n.args) for n in calls)
  assert manual >= per_rule > 0 and autodiff > 0  # the step keeps at least what each rule keeps
  page = model_step.model_html(mlp_step, check=False)
  assert f"{manual:,} bytes" in page and f"{autodiff:,} bytes" in page and page.count('class="step"') == 6


def test_a_sequence_family_runs_on_its_task_and_its_loop_is_one_expandable_node():
  step = model_step.trace_model("lstm", models.LSTM(hidden_size=3, embed_size=2), task="reverse", batch_size=1)
  lstm = next(n for n in model_step.rule_calls(step.trace) if n.op == "lstm")
  assert any(name.endswith("w_h") for name in step.trace.inputs)  # the parameters, by name
  page = model_step.model_html(step, check=False)
  assert page.count("<summary>step t = ") == lstm.value[0].shape[1]  # one line per time step


@pytest.mark.parametrize("argv, says", [
    (["trace", "--model", "mlp", "--task", "reverse"], "trains on features"),
    (["trace", "--model", "mlp", "--hidden-size", "4"], "--hidden-size does not apply to --model mlp"),
    (["trace", "--model", "mlp", "--png", "x.png"], "--png is for an expression"),
    (["trace", "--model", "mlp", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["trace"], "give an EXPRESSION to trace, or --model NAME"),
])
def test_cli_errors_are_one_line(capsys, argv, says):
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert says in err and err.count("\n") == 1, err


def test_a_features_family_refuses_a_task_before_any_work():
  with pytest.raises(ValueError, match="task"):
    model_step.trace_model("cnn", task="sort")
  with pytest.raises(ValueError, match="batch_size"):
    model_step.trace_model("mlp", batch_size=0)
