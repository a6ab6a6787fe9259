"""Data for training: the bundled digits, user ``.npz``/``.csv`` files, a stratified split, standardising.

Everything here is NumPy on the host; nothing imports JAX, and nothing imports scikit-learn unless the
digits file it ships cannot be found. Bad input raises :class:`DataError` with one line that names the file
and what is wrong, so the command can print it without a traceback.
"""

import csv
import gzip
import importlib.util
import io
import math
import os
from typing import NamedTuple

import numpy as np


class DataError(ValueError):
  """A data file or array that cannot be used; the message names the file and the problem."""


class Dataset(NamedTuple):
  """A classification data set, split and ready to train on.

  Attributes:
    x_train: float32 ``[N_train, D]`` features.
    y_train: int32 ``[N_train]`` class indices in ``[0, num_classes)``.
    x_test: float32 ``[N_test, D]``.
    y_test: int32 ``[N_test]``.
    classes: the original label of each class index (``classes[i]`` is the label of index ``i``), in sorted
      order: integers, or class names (strings) where the file names its classes.
    name: where the data came from, for reports.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  classes: tuple[int, ...] | tuple[str, ...]
  name: str

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def num_features(self) -> int:
    return self.x_train.shape[1]


def _digits_csv_path() -> str | None:
  """Path of ``digits.csv.gz`` inside the installed scikit-learn, found without importing it."""
  spec = importlib.util.find_spec("sklearn")
  if spec is None or spec.origin is None:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
  return path if os.path.isfile(path) else None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled handwritten digits: 1,797 8×8 images, 10 classes, no download.

  Reads the CSV that ships inside scikit-learn's package data directly (importing ``sklearn.datasets``
  costs about 1.5 s of start-up); falls back to ``sklearn.datasets.load_digits`` if the file moved.

  Returns:
    ``(x, y)``: float32 ``[1797, 64]`` pixel intensities 0..16 and int64 ``[1797]`` digits 0..9.
  """
  path = _digits_csv_path()
  if path is not None:
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1], table[:, -1].astype(np.int64)
  try:
    from sklearn.datasets import load_digits as sk_load_digits  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataError('the default digits data set needs scikit-learn: pip install "jaxbp[train]"'
                    " (or give a data file)") from None
  bunch = sk_load_digits()
  return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads arrays ``x`` (features, ``[N, ...]``) and ``y`` (``[N]`` integer labels or class names) from a
  ``.npz`` file; returns float32 ``[N, D]`` features and the labels (see :func:`check_arrays`)."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file")
  try:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
      names = set(f.files)
      missing = sorted({"x", "y"} - names)
      if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(names)) or 'none'});"
                        " save with np.savez(path, x=features, y=labels)")
      x, y = f["x"], f["y"]
  except DataError:
    raise
  except ValueError as e:  # object arrays need pickle, which is refused
    raise DataError(f"{path}: cannot read arrays without pickle ({e})") from None
  except Exception as e:  # zipfile.BadZipFile, OSError, EOFError: not an npz or truncated
    raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
  if x.ndim < 2:
    raise DataError(f"{path}: array 'x' must have shape [N, features...], got {x.shape}")
  if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
    raise DataError(f"{path}: array 'x' must be real numbers, got dtype {x.dtype}")
  if x.shape[0] == 0:
    raise DataError(f"{path}: no rows (array 'x' has shape {x.shape})")
  return check_arrays(x.reshape(x.shape[0], math.prod(x.shape[1:])), y, path)  # no -1: x may have 0 rows


def load_csv(path: str, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
  """Loads a UTF-8 CSV (a byte-order mark is allowed) with a header row: column ``label_column`` holds the
  labels, integers or class names (``setosa``), and every other column is a numeric feature.

  Returns float32 ``[N, D]`` features and the labels (see :func:`check_arrays`).
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # e.start counts after the byte-order mark
    line = raw[:start].count(b"\n") + 1
    raise DataError(f"{path}: line {line} is not UTF-8 (byte 0x{raw[start]:02x}); the file must be UTF-8:"
                    " save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
  rows = csv.reader(io.StringIO(text, newline=""))
  header = next(rows, None)
  if not header:
    raise DataError(f"{path}: empty file; expected a header row naming the columns")
  header = [h.strip() for h in header]
  label_at = _label_index(path, header, label_column)
  features, labels = [], []
  for line, row in enumerate(rows, start=2):
    if not row:
      continue
    if len(row) != len(header):
      raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    labels.append((line, row[label_at].strip()))
    try:
      features.append([float(v) for i, v in enumerate(row) if i != label_at])
    except ValueError:
      bad = next(i for i, v in enumerate(row) if i != label_at and not _is_float(v))
      raise DataError(f"{path}: line {line}, column {header[bad]!r}: {row[bad]!r} is not a number") from None
  if not features:
    raise DataError(f"{path}: no rows of data after the header")
  x = np.asarray(features, dtype=np.float64).reshape(len(features), len(header) - 1)
  return check_arrays(x, _labels(path, label_column, labels), path)


def _label_index(path: str, header: list[str], label_column: str) -> int:
  """The position of the label column; DataError if there is none or more than one."""
  at = [i for i, h in enumerate(header) if h == label_column]
  if not at:
    raise DataError(f"{path}: no column named {label_column!r} (columns: {', '.join(header)});"
                    " choose the label column with label_column")
  if len(at) > 1:
    raise DataError(f"{path}: {len(at)} columns are named {label_column!r} (columns"
                    f" {', '.join(str(i + 1) for i in at)}); the labels must be one column: rename the others")
  return at[0]


def _labels(path: str, column: str, labels: list[tuple[int, str]]) -> np.ndarray:
  """A CSV's labels: float64 if every one is a number, else class names; mixed or empty ones are refused."""
  numbers = [(line, v) for line, v in labels if _is_float(v)]
  if len(numbers) == len(labels):
    return np.asarray([float(v) for _, v in labels], dtype=np.float64)
  empty = next((line for line, v in labels if not v), None)
  if empty is not None:
    raise DataError(f"{path}: line {empty}, column {column!r}: the label is empty")
  if numbers:
    name = next((line, v) for line, v in labels if not _is_float(v))
    raise DataError(f"{path}: column {column!r} mixes numbers (line {numbers[0][0]}: {numbers[0][1]!r}) and class"
                    f" names (line {name[0]}: {name[1]!r}); the labels must be all numbers or all names")
  return np.asarray([v for _, v in labels], dtype=str)


def _is_float(v: str) -> bool:
  try:
    float(v)
    return True
  except ValueError:
    return False


def check_arrays(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates features ``[N, D]`` and labels ``[N]``; returns float32 ``x`` and the labels, as int64 or, for
  class names (a string array), as strings; raises :class:`DataError` naming ``source`` otherwise."""
  y = np.asarray(y)
  if x.shape[0] == 0:
    raise DataError(f"{source}: no rows (the features have shape {x.shape})")
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise DataError(f"{source}: labels 'y' must have shape [{x.shape[0]}] (one per row of x), got {y.shape}")
  if x.shape[1] == 0:
    raise DataError(f"{source}: no feature columns")
  with np.errstate(over="ignore"):
    x = x.astype(np.float32)  # checked after the cast: a finite float64 beyond float32's range is inf here
  bad = ~np.isfinite(x)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise DataError(f"{source}: features contain {int(bad.sum())} NaN/inf values or values beyond float32's"
                    f" range (first at row {row}, column {col})")
  return x, _check_labels(y, source)


def _check_labels(y: np.ndarray, source: str) -> np.ndarray:
  """int64 labels, or a str array of class names; complex, fractional or non-finite labels are refused."""
  if y.dtype.kind in "US":
    names = y.astype(str)
    if np.any(names == ""):
      raise DataError(f"{source}: the label at row {int(np.argmax(names == ''))} is an empty class name")
    return names
  if y.dtype.kind == "c":
    raise DataError(f"{source}: labels must be integers or class names, got complex numbers (dtype {y.dtype});"
                    " an imaginary part is not dropped silently")
  if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
    raise DataError(f"{source}: labels must be integers or class names, got dtype {y.dtype}")
  if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
    if not all(_is_integral(v) for v in (y.min(), y.max())) or np.any(y != np.round(y)):
      example = next((v for v in y.ravel() if not _is_integral(v)), y.ravel()[0]).item()
      raise DataError(f"{source}: labels must be integers, got {example!r} (dtype {y.dtype})")
  return y.astype(np.int64)


def _is_integral(v: object) -> bool:
  """A finite whole number small enough to be exact in float64, so it converts to int64 unchanged."""
  try:
    f = float(v)  # type: ignore[arg-type]
    return math.isfinite(f) and f == round(f) and abs(f) < 2**53
  except (TypeError, ValueError):
    return False


def stratified_split(y: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Indices of a stratified train/test split: each class of n_c examples contributes
  ``test_fraction · n_c`` rounded half up to test, but always leaves at least one example to train on.

  Args:
    y: int ``[N]`` labels.
    test_fraction: share of each class held out, in (0, 1).
    seed: the split's seed; the same seed gives the same split on every machine (NumPy's PCG64).

  Returns:
    ``(train_idx, test_idx)``, each sorted int64 indices into ``y``.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction}")
  rng = np.random.default_rng(seed)
  picks = []
  for c in np.unique(y):
    idx = np.flatnonzero(y == c)
    k = min(math.floor(test_fraction * idx.size + 0.5), idx.size - 1)
    picks.append(rng.permutation(idx)[:k])
  test = np.sort(np.concatenate(picks))
  train = np.setdiff1d(np.arange(y.shape[0]), test)
  return train, test


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Scales features to zero mean and unit variance using the training set's statistics only.

  Constant features (variance 0) are centred and left unscaled.
  """
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load_dataset(path: str | None = None, label_column: str = "label", test_fraction: float = 0.2,
                 seed: int = 0) -> Dataset:
  """The data set ``jaxbp train`` uses: a file (``.npz``/``.csv``) or the digits, split and standardised.

  Args:
    path: ``None`` for the bundled digits, else a ``.npz`` (arrays ``x``, ``y``) or ``.csv`` file.
    label_column: the CSV column holding the labels.
    test_fraction: share of each class held out for testing.
    seed: seed of the split.

  Returns:
    A :class:`Dataset`; labels are renumbered ``0..C-1`` in sorted order of the original labels (integers
    by value, class names as strings sort), which ``Dataset.classes`` records.
  """
  if path is None:
    x, y = load_digits()
    name = "digits (scikit-learn, bundled)"
  else:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
      x, y = load_npz(path)
    elif ext == ".csv":
      x, y = load_csv(path, label_column)
    else:
      raise DataError(f"{path}: unknown file type {ext or '(none)'!r}; use .npz (arrays x, y) or .csv")
    name = path
  classes, y = np.unique(y, return_inverse=True)
  if classes.size < 2:
    raise DataError(f"{name}: need at least 2 classes, got {classes.size}")
  train, test = stratified_split(y, test_fraction, seed)
  if train.size == 0 or test.size == 0:
    raise DataError(f"{name}: {y.size} rows are too few to split into train and test sets")
  x_train, x_test = standardize(x[train], x[test])
  names = tuple(str(c) for c in classes) if classes.dtype.kind == "U" else tuple(int(c) for c in classes)
  return Dataset(x_train, y[train].astype(np.int32), x_test, y[test].astype(np.int32), names, name)
