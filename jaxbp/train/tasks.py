"""Sequence tasks generated offline from a seed: reverse, sort or add digit strings, packed rows of them,
and a long lookup (no download).

Every task is character-level over one shared vocabulary, ``VOCAB = "0123456789+=>"``, and every row
of a task has the same length, so a batch is one int32 array ``[N, L]`` and a jitted step compiles once:

| task      | example (length 4)     | prompt            | answer               |
|-----------|------------------------|-------------------|----------------------|
| reverse   | ``3141>1413``          | 4 digits and ``>`` | the digits reversed  |
| sort      | ``3141>1134``          | 4 digits and ``>`` | the digits sorted    |
| add       | ``0314+0592=00906``    | a ``+`` b ``=``, each zero-padded to 4 digits | a + b in 5 digits |
| packed    | ``314>413 2718>8172 ==`` | reverse examples, packed | each one's reversal |
| lookup    | ``++37=05+++81=42+ … >81=42 37=05 …`` | pairs among filler, ``>``, keys | each key's value |

``packed``: reverse examples of length // 2 + 1 .. length digits, packed into rows of 4·(2·length + 1)
tokens with ``=`` padding at the end. ``lookup`` is multi-query associative recall (Arora et al., 2023,
"Zoology") over a long haystack: ``length`` + 1 tokens in all: ``LOOKUP_PAIRS`` = 8 pairs ``key=value``
(distinct random 2-digit keys, random 2-digit values) at random places among ``+`` filler, then ``>`` and
the 8 keys again in another order, each followed by ``=`` and its value: the answers are those values (two
digits a query, ``SequenceTask.answers``), each found by looking its key up anywhere before, on average
T/2 back. Exact match asks all 8 of a row.

``length`` is the digits per operand (1..32) except for ``lookup``, where it is the number of input
positions T (96..65536, default 128: ``lookup`` at length 8192 trains at T = 8192). A row holds the same 8
pairs at every length, only more filler, so a model trained on short rows can go on at long ones
(``--init-from``).

A model reads the whole sequence left to right and predicts each next token (a language model, as the
recurrent models and the transformers are). Only the answer is scored: the logits at positions
``prompt_length - 1 .. L - 2`` predict ``tokens[:, prompt_length:]`` (:func:`answer_logits`); for ``lookup``
only the values of its queries (``answers``); its per-token accuracy is the share of answer digits right
(chance 10%).

Packed rows (:class:`PackedTask`) hold several examples each, told apart by segment ids (1, 2, … per row,
0 for the padding): the data set carries them as ``segments_train``/``segments_test`` (the model registry's
packed batches), a model that takes them lets each token see only its own example, and exact match counts
each example. Only the answer tokens of each example are scored.

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
DIGIT_TASKS = ("reverse", "sort", "add")
TASKS = (*DIGIT_TASKS, "packed", "lookup")
DEFAULT_TASK = "reverse"
# (least, most, default) of each task's length argument: digits per operand, or lookup's positions T
LENGTHS = {**dict.fromkeys(("reverse", "sort", "add", "packed"), (1, 32, 8)), "lookup": (96, 65536, 128)}
LOOKUP_KEY, LOOKUP_PAIRS = 2, 8  # a lookup row: 8 pairs key=value, keys of 2 digits, at any length
PACK = 4  # a packed row has room for PACK examples of the longest length
PLUS, EQUALS, ARROW = VOCAB.index("+"), VOCAB.index("="), VOCAB.index(">")


class TaskError(ValueError):
  """A task that cannot be generated as asked. ``argument`` names the argument of :func:`make_task` that is
  wrong (``"length"``, ``"num_train"``, ...; ``None`` where none alone is) and the message is
  ``f"{argument} {reason}"``, so a caller with other names for them (``jaxbp train``'s flags) says its own
  name before ``reason``, as with ``ConfigError``."""

  def __init__(self, reason: str, argument: str | None = None):
    super().__init__(reason if argument is None else f"{argument} {reason}")
    self.argument, self.reason = argument, reason


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

  @property
  def answers(self) -> np.ndarray:
    """bool ``[L]``: True at the answer tokens, the scored ones (``prompt_length`` onwards; for ``lookup``
    each query's two value digits)."""
    if self.name == "lookup":
      return lookup_answers(self.length)
    return np.arange(self.seq_length) >= self.prompt_length


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


def _distinct_rows(rng, count, draw, what):
  """``count`` distinct rows of ``draw(n) -> [n, W]`` in random order (rejection of repeats); ``what``
  names what has too few distinct rows in the refusal."""
  rows = draw(0)
  for _ in range(64):
    if len(rows) >= count:
      return rng.permutation(rows)[:count]
    rows = np.unique(np.concatenate([rows, draw(2 * (count - len(rows)) + 16)]), axis=0)  # sorted: shuffled
  raise TaskError(f"too few distinct {what}; ask for fewer (num_train + num_test = {count})")


def _distinct_digits(rng, count, width):
  """``count`` distinct rows of ``width`` random digits (refuses when fewer than twice as many exist)."""
  if 10.0 ** width < 2 * count:
    raise TaskError(f"only 10^{width} distinct prompts exist; ask for fewer than half of them "
                    f"(num_train + num_test = {count})")
  return _distinct_rows(rng, count, lambda n: rng.integers(0, 10, size=(n, width)), "prompts")


class PackedTask(NamedTuple):
  """Reverse examples of varied lengths packed into rows of one length, told apart by segment ids.

  Attributes:
    name: ``"packed"``.
    train, test: int32 ``[R, L]`` rows of examples (``digits>reversed``), ``=`` padding at the end.
    segments_train, segments_test: int32 ``[R, L]``, 1, 2, … for a row's examples in order, 0 for padding.
    answers_train, answers_test: bool ``[R, L]``, True at the answer tokens (the scored ones).
    length: the most digits of an example (examples have length // 2 + 1 .. length digits).
    seed: the seed it was generated from.
  """
  name: str
  train: np.ndarray
  test: np.ndarray
  segments_train: np.ndarray
  segments_test: np.ndarray
  answers_train: np.ndarray
  answers_test: np.ndarray
  length: int
  seed: int

  @property
  def seq_length(self) -> int:
    return self.train.shape[1]


def _pack(examples, width):
  """Rows ``(tokens, segments, answers)`` of ``width`` tokens holding ``examples`` (1-D digit arrays) in
  order, greedily: an example that does not fit in the space left in a row starts the next row."""
  tokens, segments, answers = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, bool)]
  for digits in examples:
    k = len(digits)
    if len(tokens[-1]) + 2 * k + 1 > width:
      tokens.append(np.zeros(0, np.int64))
      segments.append(np.zeros(0, np.int64))
      answers.append(np.zeros(0, bool))
    tokens[-1] = np.concatenate([tokens[-1], digits, [ARROW], digits[::-1]])
    segments[-1] = np.concatenate([segments[-1], np.full(2 * k + 1, segments[-1].max(initial=0) + 1)])
    answers[-1] = np.concatenate([answers[-1], np.arange(2 * k + 1) > k])
  pad = lambda rows, value: np.stack([np.pad(r, (0, width - len(r)), constant_values=value) for r in rows])
  return pad(tokens, EQUALS).astype(np.int32), pad(segments, 0).astype(np.int32), pad(answers, False)


def make_packed(*, length: int = 8, num_train: int = 20_000, num_test: int = 2_000, seed: int = 0) -> PackedTask:
  """The ``packed`` task: ``num_train`` and ``num_test`` reverse examples (not rows) of ``length`` // 2 + 1
  .. ``length`` digits, distinct, none of the test prompts in training, packed into rows of
  ``PACK``·(2·length + 1) tokens (:class:`PackedTask`)."""
  rng = np.random.default_rng(seed)
  count = num_train + num_test
  widths = rng.integers(length // 2 + 1, length + 1, size=count)
  examples: list[np.ndarray] = [np.zeros(0, np.int64)] * count
  for width in np.unique(widths):
    at = np.flatnonzero(widths == width)
    for i, digits in zip(at, _distinct_digits(rng, len(at), int(width))):
      examples[i] = digits
  row = PACK * (2 * length + 1)
  train, test = _pack(examples[:num_train], row), _pack(examples[num_train:], row)
  return PackedTask("packed", train[0], test[0], train[1], test[1], train[2], test[2], length, seed)


def lookup_layout(length: int) -> tuple[int, int, int]:
  """``(key_width, pairs, filler)`` of a ``lookup`` row with ``length`` input positions (length + 1 tokens):
  ``LOOKUP_PAIRS`` pairs ``key=value`` (keys of ``LOOKUP_KEY`` digits) scattered among ``filler`` ``+``
  tokens, then ``>`` and every key again, each with ``=`` and its value."""
  pair = LOOKUP_KEY + 3
  return LOOKUP_KEY, LOOKUP_PAIRS, length + 1 - (2 * LOOKUP_PAIRS * pair + 1)


def lookup_answers(length: int) -> np.ndarray:
  """bool ``[length + 1]``: True at the answer tokens of a ``lookup`` row (each query's two value digits)."""
  w, pairs, _ = lookup_layout(length)
  first = length + 1 - pairs * (w + 3) + w + 1  # the first query's value, after its key and "="
  at = first + (w + 3) * np.arange(pairs)[:, None] + np.arange(2)
  answers = np.zeros(length + 1, bool)
  answers[at.ravel()] = True
  return answers


def _lookup_rows(rng, n, length):
  """``n`` rows of the ``lookup`` task (see the module docstring), int64 ``[n, length + 1]``."""
  w, pairs, filler = lookup_layout(length)
  keys = np.stack([rng.permutation(10 ** w)[:pairs] for _ in range(n)]) if n else np.zeros((0, pairs), int)
  digits = keys[..., None] // 10 ** np.arange(w - 1, -1, -1) % 10  # [n, pairs, w], distinct in a row
  table = np.concatenate([digits, np.full((n, pairs, 1), EQUALS), rng.integers(0, 10, size=(n, pairs, 2))],
                         axis=2)  # [n, pairs, w + 3]: key=value
  # where each pair starts among the filler: sorted uniform cuts of the filler, pair j after j pairs
  starts = np.sort(rng.integers(0, filler + 1, size=(n, pairs)), axis=1) + (w + 3) * np.arange(pairs)
  head = np.full((n, filler + pairs * (w + 3)), PLUS)
  np.put_along_axis(head, (starts[..., None] + np.arange(w + 3)).reshape(n, pairs * (w + 3)),
                   table.reshape(n, pairs * (w + 3)), axis=1)
  order = np.argsort(rng.random((n, pairs)), axis=1)  # the queries: every key once, shuffled
  queries = np.take_along_axis(table, order[..., None], axis=1).reshape(n, pairs * (w + 3))
  return np.concatenate([head, np.full((n, 1), ARROW), queries], axis=1)


def check_length(name: str, length: int | None) -> int:
  """Task ``name``'s length: ``length``, or its default for None; :class:`TaskError` for an unknown task
  or a length outside ``LENGTHS[name]`` (its ``argument`` is ``"length"``, which ``jaxbp train`` says as
  ``--task-length`` before anything loads)."""
  if name not in TASKS:
    raise TaskError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
  least, most, default = LENGTHS[name]
  length = default if length is None else length
  if not (isinstance(length, int) and not isinstance(length, bool) and least <= length <= most):
    raise TaskError(f"must be an integer in {least}..{most} for {name}, got {length!r}", "length")
  return length


def make_task(name: str = DEFAULT_TASK, *, length: int | None = None, num_train: int | None = None,
              num_test: int | None = None, seed: int = 0) -> SequenceTask | PackedTask:
  """Generates task ``name`` from ``seed``: the same arguments always give the same arrays.

  Args:
    name: one of ``TASKS``.
    length: digits per operand (the string to reverse or sort; each addend for ``add``; the longest
      example of ``packed``), 1..32, default 8; for ``lookup`` the input positions T, 96..65536, default 128.
    num_train: training sequences (examples for ``packed``), ≥ 1; default 20,000 (``lookup``:
      2²⁰ // length, at least 256, so that the tokens stay about a million).
    num_test: held-out sequences, ≥ 1, with prompts that never occur in training; default 2,000
      (``lookup``: num_train // 10, at least 32).
    seed: seeds NumPy's ``default_rng``.

  Returns:
    A :class:`SequenceTask`, or a :class:`PackedTask` for ``packed``.
  """
  length = check_length(name, length)
  long = name == "lookup"
  num_train = (max(256, 2 ** 20 // length) if long else 20_000) if num_train is None else num_train
  num_test = (max(32, num_train // 10) if long else 2_000) if num_test is None else num_test
  for arg, value in (("num_train", num_train), ("num_test", num_test)):
    if not (isinstance(value, int) and value >= 1):
      raise TaskError(f"must be a positive integer, got {value!r}", arg)
  if name == "packed":
    return make_packed(length=length, num_train=num_train, num_test=num_test, seed=seed)
  rng = np.random.default_rng(seed)
  if long:
    tokens = _distinct_rows(rng, num_train + num_test, lambda n: _lookup_rows(rng, n, length), "lookup rows")
    return SequenceTask(name, tokens[:num_train].astype(np.int32), tokens[num_train:].astype(np.int32),
                        int(np.argmax(lookup_answers(length))), length, seed)
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
    task: the :class:`SequenceTask` (or :class:`PackedTask`) it was made from.
    segments_train, segments_test: packed rows only (else ``None``): int32 ``[N, L − 1]``, the segment
      ids of the inputs, which the model registry's packed batches carry as their fourth array.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  mask_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  mask_test: np.ndarray
  name: str
  spec: Any
  task: SequenceTask | PackedTask
  segments_train: np.ndarray | None = None
  segments_test: np.ndarray | None = None


def language_model_arrays(tokens: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(inputs, targets, mask)`` of sequences ``tokens`` [N, L]: predict token t + 1 from tokens ≤ t,
  scored on the answer tokens only (``answers``: bool [L] or [N, L], e.g. ``SequenceTask.answers``)."""
  mask = np.broadcast_to(np.asarray(answers)[..., 1:], (len(tokens), tokens.shape[1] - 1)).astype(np.float32)
  return tokens[:, :-1], tokens[:, 1:], mask


def _split_arrays(task: SequenceTask | PackedTask,
                  split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
  """``(inputs, targets, mask, segments)`` of a task's ``split`` (segments ``None`` unless packed): a packed
  row scores the targets that are answer tokens (each lies in its example's segment, as its input does)."""
  tokens = getattr(task, split)
  if isinstance(task, SequenceTask):
    return (*language_model_arrays(tokens, task.answers), None)
  segments = getattr(task, f"segments_{split}")
  return (*language_model_arrays(tokens, getattr(task, f"answers_{split}")), segments[:, :-1])


def load_task(name: str = DEFAULT_TASK, *, seed: int = 0, **kwargs: Any) -> TaskDataset:
  """:func:`make_task` as a data set for ``jaxbp.train.fit`` (what ``jaxbp train --task NAME`` loads).

  ``kwargs`` go to :func:`make_task` (``length``, ``num_train``, ``num_test``).
  """
  from jaxbp.models import DataSpec  # pylint: disable=import-outside-toplevel  (NumPy-only until asked)
  task = make_task(name, seed=seed, **kwargs)
  train, test = _split_arrays(task, "train"), _split_arrays(task, "test")
  spec = DataSpec("tokens", (task.seq_length - 1,), len(VOCAB), len(VOCAB))
  return TaskDataset(train[0], train[1], train[2], test[0], test[1], test[2],
                     f"task {name} (length {task.length}, seed {seed})", spec, task, train[3], test[3])


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
