"""jaxbp.checkpoint: exact round trips (PRNG keys included), atomic writes, clear errors, no pickle."""

import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import checkpoint


class _Pair(NamedTuple):
  mu: jax.Array
  count: jax.Array


def _tree(seed=0):
  k = jax.random.key(seed)
  return {"params": [{"w": jax.random.normal(k, (3, 2)), "b": jnp.arange(2.0)}],
          "opt": _Pair(jnp.full((3, 2), 0.5), jnp.asarray(7, jnp.int32)),
          "key": jax.random.fold_in(k, 3), "empty": {}}


def test_round_trip_restores_every_leaf_and_the_key(tmp_path):
  path = str(tmp_path / "c.npz")
  tree = _tree()
  checkpoint.save(path, tree, {"epoch": 3, "history": [{"a": 1.5}]})
  restored, meta = checkpoint.load(path, _tree(seed=1))
  assert meta == {"epoch": 3, "history": [{"a": 1.5}]}
  chex.assert_trees_all_equal(restored["params"], tree["params"])
  chex.assert_trees_all_equal(restored["opt"], tree["opt"])
  assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))
  np.testing.assert_array_equal(jax.random.normal(restored["key"], (4,)), jax.random.normal(tree["key"], (4,)))


def test_template_may_be_abstract(tmp_path):
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, _tree())
  restored, _ = checkpoint.load(path, jax.eval_shape(_tree))
  chex.assert_trees_all_equal(restored["params"], _tree()["params"])


def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, _tree(), {"epoch": 1})

  def crash(f, **arrays):
    f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez", crash)
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save(path, _tree(seed=5), {"epoch": 2})
  monkeypatch.undo()
  _, meta = checkpoint.load(path, _tree())
  assert meta == {"epoch": 1}
  assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_truncated_and_corrupted_files_are_reported(tmp_path):
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, _tree())
  blob = (tmp_path / "c.npz").read_bytes()
  (tmp_path / "c.npz").write_bytes(blob[: len(blob) // 2])
  with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
    checkpoint.load(path, _tree())
  flipped = bytearray(blob)
  start = blob.index(b"leaf_0.npy") + 200  # inside the first array's data
  flipped[start:start + 8] = b"\xff" * 8
  (tmp_path / "c.npz").write_bytes(bytes(flipped))
  with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
    checkpoint.load(path, _tree())
  with pytest.raises(checkpoint.CheckpointError, match="no such file"):
    checkpoint.load(str(tmp_path / "none.npz"), _tree())


def test_different_model_is_rejected_with_the_paths(tmp_path):
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, _tree())
  other = _tree()
  other["params"].append({"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)})
  with pytest.raises(checkpoint.CheckpointError, match="different model"):
    checkpoint.load(path, other)
  wider = _tree()
  wider["params"][0]["w"] = jnp.zeros((4, 2))
  with pytest.raises(checkpoint.CheckpointError, match=r"\['w'\] has shape \(3, 2\)"):
    checkpoint.load(path, wider)


def test_pickled_content_is_refused(tmp_path):
  path = str(tmp_path / "evil.npz")
  np.savez(path, __meta__=np.array([{"x": 1}], dtype=object))
  with pytest.raises(checkpoint.CheckpointError, match="evil.npz"):
    checkpoint.load(path, _tree())


def test_bfloat16_round_trips_and_keys_must_match_the_template(tmp_path):
  path = str(tmp_path / "c.npz")
  tree = {"w": jnp.asarray([[1.5, -2.0]], jnp.bfloat16), "k": jax.random.key(3)}
  checkpoint.save(path, tree)
  restored, _ = checkpoint.load(path, tree)
  chex.assert_trees_all_equal(restored["w"], tree["w"])
  assert restored["w"].dtype == jnp.bfloat16
  with pytest.raises(checkpoint.CheckpointError, match=r"\['k'\] was saved as a PRNG key, the model's is not"):
    checkpoint.load(path, {"w": tree["w"], "k": jnp.zeros((), jnp.uint32)})
