"""jaxbp.train.checkpoint: exact round trips (PRNG keys included), atomic writes, clear errors, no pickle."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.train import checkpoint


class _Pair(NamedTuple):
  mu: jax.Array
  steps: jax.Array


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


def test_no_write_stays_marked_as_in_flight(tmp_path, monkeypatch):
  # A name left in the in-flight set would make sweep spare a leftover of this process forever, and the set
  # would grow by one name per saved epoch.
  path = str(tmp_path / "c.npz")
  for epoch in range(3):
    checkpoint.save(path, _tree(), {"epoch": epoch})
  assert not checkpoint._IN_FLIGHT
  monkeypatch.setattr(np, "savez", lambda f, **arrays: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
  with pytest.raises(checkpoint.CheckpointError):
    checkpoint.save(path, _tree(), {"epoch": 9})
  assert not checkpoint._IN_FLIGHT


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


# --- temporary files of killed writes ----------------------------------------------------------------------

_KILLED_WRITER = """
import importlib.util, io, os, signal, sys
import numpy as np
spec = importlib.util.spec_from_file_location("checkpoint", sys.argv[2])  # not jaxbp/__init__: no jax import
checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoint)
real_savez = np.savez
def savez_then_die(f, **arrays):
  buf = io.BytesIO()
  real_savez(buf, **arrays)
  f.write(buf.getvalue()[: buf.tell() // 2])
  f.flush()
  os.kill(os.getpid(), signal.SIGKILL)
np.savez = savez_then_die
checkpoint._write_atomic(sys.argv[1], {"leaf_0": np.zeros(5000), "__meta__": np.zeros(3, np.uint8)})
"""


def _kill_a_write(path):
  """Runs a process that starts writing a checkpoint to ``path`` and is SIGKILLed halfway through."""
  proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, path, checkpoint.__file__], capture_output=True,
                        check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_a_killed_write_leaves_a_temporary_file_the_next_save_or_load_removes(tmp_path):
  path = str(tmp_path / "c.npz")
  checkpoint.save(path, _tree(), {"epoch": 1})
  _kill_a_write(path)
  left = [n for n in os.listdir(tmp_path) if n != "c.npz"]
  assert len(left) == 1 and left[0].startswith(checkpoint.TMP_PREFIX)  # what SIGKILL leaves
  assert checkpoint.load(path, _tree())[1] == {"epoch": 1}  # the old checkpoint is whole
  assert os.listdir(tmp_path) == ["c.npz"]  # and loading swept the leftover
  _kill_a_write(path)
  checkpoint.save(path, _tree(), {"epoch": 2})
  assert os.listdir(tmp_path) == ["c.npz"]  # so does saving


def test_leftovers_of_earlier_versions_go_and_files_of_the_users_stay(tmp_path):
  partial = io.BytesIO()
  np.savez(partial, leaf_0=np.zeros(100), __meta__=np.zeros(2, np.uint8))
  half = partial.getvalue()[:300]
  (tmp_path / ".tmp-k3j_9xa0.npz").write_bytes(half)  # jaxbp's former temporary name
  (tmp_path / ".tmp-a1b2c3d4.npz").write_bytes(b"")  # created, never written
  users = {".tmp-notes.npz": half,  # not the pattern
           ".tmp-q1w2e3r4.npz": _npz_bytes(x=np.ones(3)),  # the pattern, but a user's own arrays
           f"{checkpoint.TMP_PREFIX}{os.getppid()}-abc.npz": half,  # its writer is alive
           "notes.txt": b"mine"}
  for name, content in users.items():
    (tmp_path / name).write_bytes(content)
  checkpoint.save(str(tmp_path / "c.npz"), _tree())
  assert sorted(os.listdir(tmp_path)) == sorted([*users, "c.npz"])
  for name, content in users.items():
    assert (tmp_path / name).read_bytes() == content


def _npz_bytes(**arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


# --- disk full, folders --------------------------------------------------------------------------------------

def _assert_disk_full_error(e, path):
  assert str(path) in str(e.value) and "No space left on device (ENOSPC)" in str(e.value)
  assert "previous checkpoint is unchanged" in str(e.value) and "\n" not in str(e.value)


def test_disk_full_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  path = tmp_path / "c.npz"
  checkpoint.save(str(path), _tree(), {"epoch": 1})
  good = path.read_bytes()

  def full(f, **arrays):
    f.write(b"PK\x03\x04" + b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(np, "savez", full)
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.save(str(path), _tree(seed=2), {"epoch": 2})
  _assert_disk_full_error(e, path)
  assert path.read_bytes() == good and os.listdir(tmp_path) == ["c.npz"]


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 1.6 MB tmpfs (needs root; skipped where mounting is not allowed)."""
  mnt = tmp_path / "full"
  mnt.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mnt)],
                                         capture_output=True, check=False).returncode:
    pytest.skip("mounting a tmpfs needs root")
  yield mnt
  subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_disk(small_tmpfs):
  path = small_tmpfs / "c.npz"
  big = {"w": jnp.arange(250_000, dtype=jnp.float32)}  # 1 MB: the second copy does not fit beside the first
  checkpoint.save(str(path), big, {"epoch": 1})
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.save(str(path), {"w": big["w"] + 1}, {"epoch": 2})
  _assert_disk_full_error(e, path)
  restored, meta = checkpoint.load(str(path), big)
  assert meta == {"epoch": 1} and os.listdir(small_tmpfs) == ["c.npz"]
  chex.assert_trees_all_equal(restored, big)


def test_a_missing_folder_or_a_folder_as_the_file_is_refused(tmp_path):
  (tmp_path / "a").mkdir()
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    checkpoint.save(str(tmp_path / "none" / "c.npz"), _tree())
  with pytest.raises(checkpoint.CheckpointError, match="is a folder"):
    checkpoint.save(str(tmp_path / "a"), _tree())


# --- corruption: always a CheckpointError naming the file ---------------------------------------------------

def _record(epoch):
  return {"epoch": epoch, "train_loss": 0.5, "train_accuracy": 0.75, "test_loss": 0.625, "test_accuracy": 0.5,
          "seconds": 1.0, "layer_grad_norms": [0.25, 2.0]}


def _run_meta(epoch=2):
  """A training run's metadata, as ``fit`` writes it (``train.read_checkpoint`` checks it)."""
  from jaxbp.train import TrainConfig  # pylint: disable=import-outside-toplevel
  return {"config": TrainConfig(epochs=2).to_json(), "epoch": epoch,
          "history": [_record(e + 1) for e in range(epoch)], "data": {"name": "d", "sha256": "ab12", "source": {}}}


def _small_tree():
  return {"w": jnp.arange(6.0).reshape(3, 2), "n": jnp.asarray(3, jnp.int32), "k": jax.random.key(1)}


def _rewrite_doc(good, path, doc_bytes):
  """Copies checkpoint ``good`` to ``path`` with its JSON document replaced by ``doc_bytes`` (CRCs valid)."""
  with np.load(good) as f:
    arrays = {k: f[k] for k in f.files}
  _overwrite(path, _npz_bytes(**(arrays | {checkpoint.META_KEY: np.frombuffer(doc_bytes, np.uint8)})))


def _overwrite(path, content):
  """Writes ``content`` over ``path`` in place: as fast as the fuzz needs where truncating costs 0.3 ms."""
  with open(path, "r+b" if os.path.exists(path) else "wb") as f:
    f.write(content)
    f.truncate()


def _doc(**changes):
  doc = {"format": checkpoint.FORMAT, "paths": ["['k']", "['n']", "['w']"], "keys": {"0": "threefry2x32"},
         "meta": _run_meta()}
  return {k: v for k, v in (doc | changes).items() if v is not None}


BAD_DOCS = {  # the document's structure; a run's metadata inside it: tests/train/test_resume.py
    "a JSON list": ([1, 2], "its document is a list, expected an object"),
    "paths as an int": (_doc(paths=3), "'paths' is an integer, expected a list of strings"),
    "keys naming no leaf": (_doc(keys={"7": "threefry2x32"}), "'keys' names leaf '7'"),
    "unknown key impl": (_doc(keys={"0": "nonsense"}), r"\['k'\] is not a 'nonsense' PRNG key"),
    "meta a string": (_doc(meta="x"), "'meta' is a string"),
}


@pytest.mark.parametrize("case", BAD_DOCS, ids=list(BAD_DOCS))
def test_malformed_metadata_is_named(tmp_path, case):
  doc, fragment = BAD_DOCS[case]
  good, path = str(tmp_path / "good.npz"), str(tmp_path / "bad.npz")
  checkpoint.save(good, _small_tree(), _run_meta())
  _rewrite_doc(good, path, json.dumps(doc).encode())
  with pytest.raises(checkpoint.CheckpointError, match=fragment) as e:
    checkpoint.load(path, _small_tree())
  assert str(e.value).startswith(f"checkpoint {path}") and "\n" not in str(e.value)


def _load_or_checkpoint_error(path, expected):
  """Loads ``path`` and reads it as a run: either exactly ``expected`` and a usable run come back, or
  CheckpointError; anything else fails."""
  from jaxbp import train  # pylint: disable=import-outside-toplevel
  try:
    tree, meta = checkpoint.load(path, expected)
    resumed = train.read_checkpoint(path)
  except checkpoint.CheckpointError as e:
    assert path in str(e) and "\n" not in str(e)
    return False
  chex.assert_trees_all_equal(jax.random.key_data(tree.pop("k")), jax.random.key_data(expected["k"]))
  chex.assert_trees_all_equal(tree, {k: v for k, v in expected.items() if k != "k"})
  assert isinstance(resumed.config, train.TrainConfig)
  assert resumed.epoch == len(resumed.history) == meta["epoch"]
  return True


def test_fuzz_every_bit_of_the_zip_directory(tmp_path):
  good, path = str(tmp_path / "good.npz"), str(tmp_path / "fuzz.npz")
  tree = _small_tree()
  checkpoint.save(good, tree, _run_meta())
  with open(good, "rb") as f:
    blob = f.read()
  directory = int.from_bytes(blob[-6:-2], "little")  # the end record's offset of the central directory
  assert blob[directory:directory + 4] == b"PK\x01\x02" and blob[-22:-18] == b"PK\x05\x06"
  first_local_header = range(0, 30 + len("leaf_0.npy") + 20)  # and leaf_0's local header, zip64 extra included
  loaded = 0
  for i in [*first_local_header, *range(directory, len(blob))]:
    for bit in range(8):
      mutated = bytearray(blob)
      mutated[i] ^= 1 << bit
      _overwrite(path, mutated)
      loaded += _load_or_checkpoint_error(path, tree)
  assert 0 < loaded < 8 * (len(blob) - directory)  # some bits (times, attributes) do not matter, most do


def test_fuzz_the_metadata_document(tmp_path):
  good, path = str(tmp_path / "good.npz"), str(tmp_path / "fuzz.npz")
  tree = _small_tree()
  checkpoint.save(good, tree, _run_meta(epoch=1))
  text = json.dumps(checkpoint.read(good)[0]).encode()
  structural = b'"{}[],:0 -.ntf\\'
  loaded = 0
  for i in range(len(text)):
    for j, new in enumerate((text[i] ^ 1, text[i] ^ 2, text[i] ^ 16, structural[(3 * i) % len(structural)])):
      if new == text[i] or (j == 3 and i % 2):
        continue
      _rewrite_doc(good, path, text[:i] + bytes([new]) + text[i + 1:])
      loaded += _load_or_checkpoint_error(path, tree)
  assert loaded > 0  # e.g. a changed digit of a loss still loads, with the identical tree
