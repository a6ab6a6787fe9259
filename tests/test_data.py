"""jaxbp.data: the bundled digits, the stratified split, standardising, and one-line errors for bad files."""

import numpy as np
import pytest

from jaxbp import data


def test_digits_read_from_package_data_match_sklearn():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = data.load_digits()
  bunch = load_digits()
  assert x.shape == (1797, 64) and x.dtype == np.float32
  np.testing.assert_array_equal(x, bunch.data.astype(np.float32))
  np.testing.assert_array_equal(y, bunch.target)


def test_stratified_split_keeps_class_shares_and_is_deterministic():
  y = np.repeat(np.arange(3), [50, 30, 20])
  train, test = data.stratified_split(y, 0.2, seed=7)
  assert np.intersect1d(train, test).size == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
  np.testing.assert_array_equal(np.bincount(y[test]), [10, 6, 4])
  again = data.stratified_split(y, 0.2, seed=7)
  np.testing.assert_array_equal(test, again[1])
  assert not np.array_equal(test, data.stratified_split(y, 0.2, seed=8)[1])


def test_stratified_split_never_empties_a_class_of_training_examples():
  y = np.array([0, 1, 1, 1, 1])
  train, test = data.stratified_split(y, test_fraction=0.6)
  assert 0 in y[train]  # round(0.6 · 1) = 1 would have sent the only example of class 0 to test
  assert len(test) == 2  # class 1: 0.6 · 4 = 2.4 → 2


def test_standardize_uses_training_statistics_only():
  rng = np.random.default_rng(0)
  x_train = rng.normal(3.0, 2.0, size=(200, 3)).astype(np.float32)
  x_train[:, 2] = 5.0  # constant column: centred, not divided by zero
  x_test = rng.normal(0.0, 1.0, size=(10, 3)).astype(np.float32)
  s_train, s_test = data.standardize(x_train, x_test)
  np.testing.assert_allclose(s_train[:, :2].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(s_train[:, :2].std(0), 1, atol=1e-5)
  np.testing.assert_array_equal(s_train[:, 2], 0)
  np.testing.assert_allclose(s_test[:, 0], (x_test[:, 0] - x_train[:, 0].mean()) / x_train[:, 0].std(), rtol=1e-5)


def test_digits_dataset_is_split_and_standardised():
  d = data.load_dataset()
  assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
  assert d.num_classes == 10 and d.classes == tuple(range(10))
  assert np.all(np.bincount(d.y_test) >= 35)
  assert abs(float(d.x_train.mean())) < 1e-5


def test_npz_and_csv_load_and_renumber_labels(tmp_path):
  x = np.arange(24, dtype=np.float64).reshape(12, 2)
  y = np.array([3, 7] * 6)
  np.savez(tmp_path / "d.npz", x=x, y=y)
  d = data.load_dataset(str(tmp_path / "d.npz"), test_fraction=0.5)
  assert d.classes == (3, 7) and set(d.y_train) == {0, 1}
  (tmp_path / "d.csv").write_text("f1,target,f2\n" + "\n".join(
      f"{a},{c},{b}" for (a, b), c in zip(x, y)) + "\n")
  xc, yc = data.load_csv(str(tmp_path / "d.csv"), "target")
  np.testing.assert_array_equal(xc, x.astype(np.float32))
  np.testing.assert_array_equal(yc, y)


BAD_NPZ = {
    "missing y": (dict(x=np.zeros((4, 2))), "missing array(s) y"),
    "nan features": (dict(x=np.array([[0.0, np.nan]] * 4), y=np.zeros(4, int)), "NaN/inf"),
    "fractional labels": (dict(x=np.zeros((4, 2)), y=np.array([0, 1.5, 1, 0])), "labels must be integers"),
    "label count": (dict(x=np.zeros((4, 2)), y=np.zeros(3, int)), "labels 'y' must have shape [4]"),
    "ragged (object) x": (dict(x=np.array([[1.0], [1.0, 2.0]], dtype=object), y=np.zeros(2, int)), "pickle"),
    "beyond float32": (dict(x=np.array([[0.0, 1e39]] * 4), y=np.zeros(4, int)), "beyond float32's range"),
    "complex x": (dict(x=np.ones((4, 2), complex), y=np.zeros(4, int)), "must be real numbers"),
    "labels past int64": (dict(x=np.zeros((4, 2)), y=np.array([0, 1e20, 1, 0])), "labels must be integers"),
}


@pytest.mark.parametrize("case", BAD_NPZ, ids=list(BAD_NPZ))
def test_bad_npz_gets_one_line_naming_the_file(tmp_path, case):
  arrays, fragment = BAD_NPZ[case]
  path = str(tmp_path / "bad.npz")
  np.savez(path, **arrays)
  with pytest.raises(data.DataError, match="bad.npz") as e:
    data.load_dataset(path)
  assert fragment in str(e.value) and "\n" not in str(e.value)


BAD_CSV = {
    "ragged": ("a,label\n1,0\n2\n", "line 3 has 1 fields, the header has 2"),
    "not a number": ("a,label\n1,0\nx,1\n", "line 3, column 'a': 'x' is not a number"),
    "no label column": ("a,b\n1,0\n", "no column named 'label'"),
    "nan": ("a,label\nnan,0\n1,1\n", "NaN/inf"),
    "labels not integers": ("a,label\n1,0.5\n2,1\n", "labels must be integers"),
    "empty": ("", "empty file"),
}


@pytest.mark.parametrize("case", BAD_CSV, ids=list(BAD_CSV))
def test_bad_csv_gets_one_line_naming_the_file(tmp_path, case):
  text, fragment = BAD_CSV[case]
  path = tmp_path / "bad.csv"
  path.write_text(text)
  with pytest.raises(data.DataError, match="bad.csv") as e:
    data.load_dataset(str(path))
  assert fragment in str(e.value) and "\n" not in str(e.value)


def test_missing_and_unknown_files(tmp_path):
  with pytest.raises(data.DataError, match="nope.npz: no such file"):
    data.load_dataset(str(tmp_path / "nope.npz"))
  (tmp_path / "d.txt").write_text("1")
  with pytest.raises(data.DataError, match="unknown file type '.txt'"):
    data.load_dataset(str(tmp_path / "d.txt"))
  (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(data.DataError, match="not a readable .npz"):
    data.load_dataset(str(tmp_path / "t.npz"))
