"""Sequence tasks generated offline from a seed: reverse, sort or add digit strings (no download).

Every task is character-level over one shared vocabulary, ``VOCAB = "0123456789+=>"``, and every example
of a task has the same length, so a batch is one int32 array ``[N, L]`` and a jitted step compiles once:

| task      | example (length 4)     | prompt            | answer               |
|-----------|------------------------|-------------------|----------------------|
| reverse   | ``3141>1413``          | 4 digits and ``>`` | the digits reversed  |
| sort      | ``3141>1134``          | 4 digits and ``>`` | the digits sorted    |
| add       | ``0314+0592=00906``    | a ``+`` b ``=``, each zero-padded to 4 digits | a + b in 5 digits |

A model reads the whole sequence left to right and predicts each next token (a language model, as the
recurrent models and the transformer are). Only the answer is scored: the logits at positions
``prompt_length - 1 .. L - 2`` predict ``tokens[:, prompt_length:]`` (:func:`answer_logits`).

Exact match (:func:`exact_match`): a sequence counts as solved when the argmax at EVERY answer position
is the true token, given the true prefix (teacher forcing). That equals greedy decoding's exact match:
if every argmax is right given the true prefix, greedy decoding produces the true prefix step by step,
so it produces the whole answer; and if greedy decoding produces the answer, each of its steps saw
the true prefix. So one parallel forward pass scores it, with no sampling loop.

Held out: the test prompts are drawn without replacement together with the training prompts, so no
test prompt occurs in the training set (checked by ``tests/train/test_tasks.py``).
"""

from typing import Any, NamedTuple

import numpy as np

VOCAB = "0123456789+=>"
TASKS = ("reverse", "sort", "add")
DEFAULT_TASK = "reverse"
PLUS, EQUALS, ARROW = VOCAB.index("+"), VOCAB.index("="), VOCAB.index(">")


class TaskError(ValueError):
  """A task that cannot be generated as asked; the message names the argument."""


class SequenceTask(NamedTuple):
  """A generated task, split into training and held-out test sequences.

  Attributes:
    name: one of ``TASKS``.
    train: int32 ``[N_train, L]`` token ids into ``VOCAB``: prompt then answer.
    test: int32 ``[N_test, L]``, prompts disjoint from the training set's.
    prompt_length: tokens before the answer (the separator included); the answer is
      ``tokens[:, prompt_length:]``.
    length: digits per operand, as asked.
    seed: the seed it was generated from.
  """
  name: str
  train: np.ndarray
  test: np.ndarray
  prompt_length: int
  length: int
  seed: int

  @property
  def vocab_size(self) -> int:
    return len(VOCAB)

  @property
  def seq_length(self) -> int:
    return self.train.shape[1]

  @property
  def answer_length(self) -> int:
    return self.seq_length - self.prompt_length


def _prompts(name, digits):
  """The prompt tokens [N, P] for digit arrays ``digits`` [N, K] (K = length, or 2·length for add)."""
  n, k = digits.shape
  if name == "add":
    half = k // 2
    return np.concatenate([digits[:, :half], np.full((n, 1), PLUS), digits[:, half:],
                           np.full((n, 1), EQUALS)], axis=1)
  return np.concatenate([digits, np.full((n, 1), ARROW)], axis=1)


def _answers(name, digits):
  """The answer tokens [N, A] the task asks for."""
  if name == "reverse":
    return digits[:, ::-1]
  if name == "sort":
    return np.sort(digits, axis=1)
  half = digits.shape[1] // 2
  a, b = digits[:, :half], digits[:, half:]
  out, carry = [], np.zeros(len(digits), np.int64)
  for k in range(half - 1, -1, -1):  # column addition, least significant digit first: no overflow
    column = a[:, k] + b[:, k] + carry
    out.append(column % 10)
    carry = column // 10
  return np.stack([carry] + out[::-1], axis=1)


def _distinct_digits(rng, count, width):
  """``count`` distinct rows of ``width`` random digits (rejection of repeats; refuses when too few exist)."""
  if 10.0 ** width < 2 * count:
    raise TaskError(f"only 10^{width} distinct prompts exist; ask for fewer than half of them "
                    f"(num_train + num_test = {count})")
  rows = np.zeros((0, width), np.int64)
  while len(rows) < count:
    new = rng.integers(0, 10, size=(2 * (count - len(rows)) + 16, width))
    rows = np.unique(np.concatenate([rows, new]), axis=0)  # sorted: shuffled below
  return rng.permutation(rows)[:count]


def make_task(name: str = DEFAULT_TASK, *, length: int = 8, num_train: int = 20_000,
              num_test: int = 2_000, seed: int = 0) -> SequenceTask:
  """Generates task ``name`` from ``seed``: the same arguments always give the same arrays.

  Args:
    name: one of ``TASKS``.
    length: digits per operand (the string to reverse or sort; each addend for ``add``), 1..32.
    num_train: training sequences, ≥ 1.
    num_test: held-out sequences, ≥ 1, with prompts that never occur in training.
    seed: seeds NumPy's ``default_rng``.

  Returns:
    A :class:`SequenceTask`.
  """
  if name not in TASKS:
    raise TaskError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
  if not (isinstance(length, int) and 1 <= length <= 32):
    raise TaskError(f"task length must be an integer in 1..32, got {length!r}")
  for arg, value in (("num_train", num_train), ("num_test", num_test)):
    if not (isinstance(value, int) and value >= 1):
      raise TaskError(f"{arg} must be a positive integer, got {value!r}")
  rng = np.random.default_rng(seed)
  width = 2 * length if name == "add" else length
  digits = _distinct_digits(rng, num_train + num_test, width)
  tokens = np.concatenate([_prompts(name, digits), _answers(name, digits)], axis=1).astype(np.int32)
  prompt_length = width + (2 if name == "add" else 1)
  return SequenceTask(name, tokens[:num_train], tokens[num_train:], prompt_length, length, seed)


class TaskDataset(NamedTuple):
  """A task as ``jaxbp.train.fit`` takes a sequence data set (the model registry's "tokens" batches).

  Attributes:
    x_train: int32 ``[N_train, L − 1]``, the inputs ``tokens[:, :-1]``.
    y_train: int32 ``[N_train, L − 1]``, the next tokens ``tokens[:, 1:]``.
    mask_train: float32 ``[N_train, L − 1]``, 1 at the positions that predict the answer
      (``prompt_length − 1`` onwards), 0 on the prompt.
    x_test, y_test, mask_test: the same for the held-out sequences.
    name: ``"task NAME (length K, seed S)"``, for reports.
    spec: the ``jaxbp.models.DataSpec``: kind ``"tokens"``, input shape ``(L − 1,)``, ``len(VOCAB)``
      classes and vocabulary.
    task: the :class:`SequenceTask` it was made from.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  mask_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  mask_test: np.ndarray
  name: str
  spec: Any
  task: SequenceTask


def language_model_arrays(tokens: np.ndarray, prompt_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(inputs, targets, mask)`` of sequences ``tokens`` [N, L]: predict token t + 1 from tokens ≤ t,
  scored on the answer only (the targets ``tokens[:, prompt_length:]``)."""
  mask = np.zeros(tokens.shape[1] - 1, np.float32)
  mask[prompt_length - 1:] = 1
  return tokens[:, :-1], tokens[:, 1:], np.broadcast_to(mask, (len(tokens), len(mask))).copy()


def load_task(name: str = DEFAULT_TASK, *, seed: int = 0, **kwargs: Any) -> TaskDataset:
  """:func:`make_task` as a data set for ``jaxbp.train.fit`` (what ``jaxbp train --task NAME`` loads).

  ``kwargs`` go to :func:`make_task` (``length``, ``num_train``, ``num_test``).
  """
  from jaxbp.models import DataSpec  # pylint: disable=import-outside-toplevel  (NumPy-only until asked)
  task = make_task(name, seed=seed, **kwargs)
  x_train, y_train, mask_train = language_model_arrays(task.train, task.prompt_length)
  x_test, y_test, mask_test = language_model_arrays(task.test, task.prompt_length)
  spec = DataSpec("tokens", (task.seq_length - 1,), len(VOCAB), len(VOCAB))
  return TaskDataset(x_train, y_train, mask_train, x_test, y_test, mask_test,
                     f"task {name} (length {task.length}, seed {seed})", spec, task)


def encode(text: str) -> np.ndarray:
  """Token ids int32 [len(text)] of a string over ``VOCAB``."""
  bad = sorted(set(text) - set(VOCAB))
  if bad:
    raise TaskError(f"characters {bad} are not in the vocabulary {VOCAB!r}")
  return np.array([VOCAB.index(c) for c in text], np.int32)


def decode(tokens) -> str:
  """The string of a 1-D sequence of token ids."""
  return "".join(VOCAB[int(t)] for t in np.asarray(tokens).ravel())


def answer_logits(logits, prompt_length: int):
  """The logits that predict the answer: positions ``prompt_length - 1 .. L - 2`` of ``logits`` [N, L - 1, V]
  (the model's outputs on ``tokens[:, :-1]``); returns [N, A, V] aligned with ``tokens[:, prompt_length:]``."""
  return logits[:, prompt_length - 1:]


def exact_match(logits, answers):
  """The fraction of sequences whose every answer token is the argmax (greedy decoding's exact match).

  Args:
    logits: [N, A, V] from :func:`answer_logits`.
    answers: int [N, A], ``tokens[:, prompt_length:]``.

  Works on NumPy and JAX arrays (and under ``jit``).
  """
  correct = (logits.argmax(axis=-1) == answers).all(axis=-1)
  return correct.mean()
