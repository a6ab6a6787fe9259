"""jaxbp.train.data: the bundled digits, the stratified split, standardising, and one-line errors for bad files."""

import numpy as np
import pytest

from jaxbp.train import data


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
    "complex labels": (dict(x=np.zeros((4, 2)), y=np.array([0 + 7j, 1, 1, 0])), "got complex numbers"),
    "real complex labels": (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 1, 0], complex)), "got complex numbers"),
    "no rows": (dict(x=np.zeros((0, 5)), y=np.zeros(0, int)), "no rows (array 'x' has shape (0, 5))"),
    "no rows, images": (dict(x=np.zeros((0, 2, 3)), y=np.zeros(0, int)), "no rows"),
    "no features": (dict(x=np.zeros((4, 0)), y=np.zeros(4, int)), "no feature columns"),
    "empty class name": (dict(x=np.zeros((4, 2)), y=np.array(["a", "", "a", "b"])), "row 1 is an empty class name"),
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
    "header only": ("a,b,c,d,e,label\n", "no rows of data after the header"),
    "two label columns": ("label,a,label\n1,2,0\n0,3,1\n", "2 columns are named 'label' (columns 1, 3)"),
    "latin-1": ("a,label\n1,0\n2,1\n3,caf\u00e9\n".encode("latin-1"),
                "line 4 is not UTF-8 (byte 0xe9); the file must be UTF-8"),
    "numbers and names": ("a,label\n1,0\n2,setosa\n", "mixes numbers (line 2: '0') and class names (line 3: 'setosa')"),
    "empty label": ("a,label\n1,setosa\n2, \n", "line 3, column 'label': the label is empty"),
}


@pytest.mark.parametrize("case", BAD_CSV, ids=list(BAD_CSV))
def test_bad_csv_gets_one_line_naming_the_file(tmp_path, case):
  text, fragment = BAD_CSV[case]
  path = tmp_path / "bad.csv"
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text, encoding="utf-8")
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


def test_two_columns_of_a_chosen_label_name_are_refused(tmp_path):
  (tmp_path / "d.csv").write_text("target,a,target\n1,2,0\n0,3,1\n")
  with pytest.raises(data.DataError, match=r"d.csv: 2 columns are named 'target'"):
    data.load_csv(str(tmp_path / "d.csv"), "target")


IRIS_LIKE = "label,petal\n" + "".join(f"{c},{i}\n" for i, c in enumerate(["virginica", "setosa", "versicolor"] * 4))


def test_class_names_map_to_indices_in_sorted_order_and_a_byte_order_mark_is_read(tmp_path):
  path = tmp_path / "iris.csv"
  path.write_bytes(b"\xef\xbb\xbf" + IRIS_LIKE.encode())  # as Excel saves "CSV UTF-8"
  x, y = data.load_csv(str(path))
  assert list(y[:3]) == ["virginica", "setosa", "versicolor"] and x[:, 0].tolist() == list(range(12))
  d = data.load_dataset(str(path), test_fraction=0.25)
  assert d.classes == ("setosa", "versicolor", "virginica")
  rows = np.concatenate([d.x_train[:, 0], d.x_test[:, 0]])  # standardised petal = row number, in order
  labels = np.concatenate([d.y_train, d.y_test])[np.argsort(rows)]
  np.testing.assert_array_equal(labels, [2, 0, 1] * 4)
  np.savez(tmp_path / "iris.npz", x=x, y=y)
  assert data.load_dataset(str(tmp_path / "iris.npz"), test_fraction=0.25).classes == d.classes
  from jaxbp.train import data_identity  # pylint: disable=import-outside-toplevel
  assert data_identity(d)["classes"] == ["setosa", "versicolor", "virginica"]  # into the checkpoint and metrics
  same = data.load_dataset(str(tmp_path / "iris.npz"), test_fraction=0.25)
  assert data_identity(same)["sha256"] == data_identity(d)["sha256"]  # the content, not the file, identifies it
