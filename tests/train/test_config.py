"""jaxbp.train.config: check_config names the field (a model's as model.<field>), and the JSON form a
checkpoint stores comes back as the same config."""

import pytest

from jaxbp import models
from jaxbp import train


@pytest.mark.parametrize("doc, says, never", [
    ({"lr": "x"}, "missing field(s)", "unknown"),
    ({**train.TrainConfig().to_json(), "lrr": 1}, "unknown field(s) ['lrr']", "missing"),
])
def test_a_damaged_config_names_only_what_is_wrong(doc, says, never):
  with pytest.raises(ValueError) as err:
    train.TrainConfig.from_json(doc)
  assert says in str(err.value) and never not in str(err.value)


@pytest.mark.parametrize("changes, field, reason", [
    ({"lr": 0.0}, "lr", "must be positive, got 0.0"),
    ({"optimizer": "lion"}, "optimizer", "must be one of sgd, momentum"),
    ({"loss": "hinge", "model": models.LSTM()}, "loss", "must be one of cross-entropy for model lstm"),
    ({"clip": -1.0}, "clip", "must be >= 0, got -1.0"),
    ({"epochs": 2.5}, "epochs", "must be int, got 2.5"),
    ({"model_parallel": 2}, "model_parallel", "2 needs a model family that splits its parameters"),
    ({"model": models.MLP(activation="swish")}, "model.activation", "must be one of relu, leaky_relu"),
    ({"model": models.MLP(dropout=1.5)}, "model", "mlp: MLPConfig.dropout must be in [0, 1), got 1.5"),
    ({"model": "mlp"}, "model", "must be the config of a registered family"),
    ({"dtype": "float16"}, "dtype", "must be one of float32, bfloat16"),
])
def test_check_config_names_the_field_and_says_why(changes, field, reason):
  with pytest.raises(train.ConfigError) as e:
    train.check_config(train.TrainConfig()._replace(**changes))
  assert e.value.field == field and e.value.reason.startswith(reason), (e.value.field, e.value.reason)
  assert str(e.value) == f"{field} {e.value.reason}"


def test_a_config_round_trips_through_json_and_an_older_one_takes_the_old_behaviour():
  config = train.TrainConfig(model=models.CNN(channels=(4,), hidden=()), weight_decay=None, clip=0.5, seed=7)
  doc = config.to_json()
  assert doc["model"] == {"name": "cnn", "config": {**models.CNN(channels=(4,), hidden=())._asdict(), "channels": [4],
                                                    "hidden": []}}
  assert train.TrainConfig.from_json(doc) == config
  older = {k: v for k, v in doc.items() if k != "model_parallel"}  # written before model parallelism existed
  assert train.TrainConfig.from_json(older).model_parallel == 1
  assert train.TrainConfig.from_json({k: v for k, v in doc.items() if k != "dtype"}).dtype == "float32"
  assert train.check_config(config) is models.get("cnn")
