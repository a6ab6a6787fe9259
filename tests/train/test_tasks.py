"""The generated sequence tasks: correct answers, determinism, held-out prompts, exact match, bad arguments."""

import numpy as np
import pytest

from jaxbp.train import tasks


@pytest.mark.parametrize("name", tasks.DIGIT_TASKS)
def test_every_answer_is_right_and_the_split_is_held_out(name):
  task = tasks.make_task(name, length=5, num_train=300, num_test=100, seed=3)
  assert task.train.dtype == np.int32 and task.test.shape == (100, task.seq_length)
  for row in np.concatenate([task.train, task.test]):
    text = tasks.decode(row)
    prompt, answer = text[:task.prompt_length], text[task.prompt_length:]
    if name == "add":
      a, b = prompt[:-1].split("+")
      assert int(answer) == int(a) + int(b) and len(answer) == 6
    else:
      digits = prompt[:-1]
      assert answer == (digits[::-1] if name == "reverse" else "".join(sorted(digits)))
  train = {bytes(r[:task.prompt_length]) for r in task.train}
  assert not any(bytes(r[:task.prompt_length]) in train for r in task.test)
  assert len(train) == 300  # no prompt repeats inside the training set either


def test_same_seed_same_data_other_seed_other_data():
  a, b, c = (tasks.make_task("sort", length=6, num_train=50, num_test=10, seed=s) for s in (0, 0, 1))
  np.testing.assert_array_equal(a.train, b.train)
  np.testing.assert_array_equal(a.test, b.test)
  assert not np.array_equal(a.train, c.train)


def test_exact_match_needs_every_answer_token():
  answers = np.array([[1, 2], [3, 4], [5, 6]])
  logits = np.eye(13)[answers] * 5.0  # all right
  logits[1, 1] = np.eye(13)[0]        # sequence 1 wrong in its last token only
  assert tasks.exact_match(logits, answers) == pytest.approx(2 / 3)
  full = np.zeros((3, 6, 13))  # L = 7 tokens: logits on the first 6
  full[:, 4:] = logits  # prompt_length 5: the logits at positions 4, 5 predict the answer
  np.testing.assert_array_equal(tasks.answer_logits(full, 5), logits)


def test_encode_decode_round_trip_and_errors():
  assert tasks.decode(tasks.encode("12+3=15")) == "12+3=15"
  with pytest.raises(tasks.TaskError, match=r"characters \['x'\] are not in the vocabulary"):
    tasks.encode("1x")
  with pytest.raises(tasks.TaskError, match="task must be one of reverse, sort, add, packed, lookup; got 'copy'"):
    tasks.make_task("copy")
  with pytest.raises(tasks.TaskError, match="^length must be an integer in 1..32 for sort, got 0") as e:
    tasks.make_task("sort", length=0)
  assert (e.value.argument, e.value.reason) == ("length", "must be an integer in 1..32 for sort, got 0")
  with pytest.raises(tasks.TaskError, match="^num_test must be a positive integer"):
    tasks.make_task("sort", num_test=0)
  with pytest.raises(tasks.TaskError, match="only 10\\^2 distinct prompts exist"):
    tasks.make_task("reverse", length=2, num_train=60, num_test=10)
  with pytest.raises(tasks.TaskError, match="^length must be an integer in 96..65536 for lookup, got 8"):
    tasks.make_task("lookup", length=8)


def test_packed_rows_hold_reverse_examples_told_apart_by_segment_ids():
  task = tasks.make_task("packed", length=5, num_train=200, num_test=40, seed=1)
  assert task.train.shape[1] == tasks.PACK * 11 and task.segments_test.shape == task.test.shape
  prompts = {}
  for split in ("train", "test"):
    rows, segments, answers = (getattr(task, f"{a}{split}") for a in ("", "segments_", "answers_"))
    found = []
    for row, seg, ans in zip(rows, segments, answers):
      assert set(tasks.decode(row[seg == 0])) <= {"="}  # padding only where the id is 0, at the end
      ids = seg[seg > 0]
      assert np.all(np.diff(ids) >= 0) and ids[0] == 1 and set(ids) == set(range(1, ids.max() + 1))
      for s in range(1, ids.max() + 1):
        digits, answer = tasks.decode(row[seg == s]).split(">")
        assert answer == digits[::-1] and 3 <= len(digits) <= 5
        assert tasks.decode(row[(seg == s) & ans]) == answer  # exactly the answer tokens are marked
        found.append(digits)
    prompts[split] = found
  assert len(prompts["train"]) == 200 and len(prompts["test"]) == 40
  assert len(set(prompts["train"])) == 200 and not set(prompts["train"]) & set(prompts["test"])
  data = tasks.load_task("packed", length=5, num_train=200, num_test=40, seed=1)
  np.testing.assert_array_equal(data.segments_train, task.segments_train[:, :-1])
  np.testing.assert_array_equal(data.mask_train, task.answers_train[:, 1:])  # a target that is an answer token
  assert np.all(data.segments_train[data.mask_train > 0] > 0)


@pytest.mark.parametrize("length", [96, 128, 1000])
def test_lookup_asks_every_key_again_and_scores_its_value(length):
  task = tasks.make_task("lookup", length=length, num_train=60, num_test=10, seed=2)
  w, pairs, filler = tasks.lookup_layout(length)
  assert task.train.shape == (60, length + 1) and (w, pairs) == (tasks.LOOKUP_KEY, tasks.LOOKUP_PAIRS)
  answers, reordered, starts = task.answers, 0, []
  for row in task.train:
    text = tasks.decode(row)
    head, queries = text.split(">")
    assert len(head) == filler + pairs * (w + 3) and head.count("+") == filler  # pairs whole among the filler
    body = head.replace("+", "")
    table = {body[i:i + w]: body[i + w + 1:i + w + 3] for i in range(0, len(body), w + 3)}
    assert len(table) == pairs and all(body[i + w] == "=" for i in range(0, len(body), w + 3))
    asked = [queries[i:i + w] for i in range(0, len(queries), w + 3)]
    assert sorted(asked) == sorted(table)  # every key asked once
    reordered += asked != list(table)
    scored = "".join(c for c, a in zip(text, answers) if a)
    assert scored == "".join(table[k] for k in asked)  # the answers are the values of the keys asked, in order
    starts.append(head.index(body[:w + 3]))
  assert reordered >= 50  # in another order than the pairs' (the same in 1/8! of rows)
  if filler > 100:  # the first pair anywhere in the filler's first part, not always at the start
    assert max(starts) > filler // 16 and min(starts) < filler // 16
  assert answers.sum() == 2 * pairs and task.prompt_length == np.argmax(answers)
  data = tasks.load_task("lookup", length=length, num_train=60, num_test=10, seed=2)
  np.testing.assert_array_equal(data.mask_train[0], answers[1:])  # the loss scores the answers and nothing else
  assert not {bytes(r) for r in task.train} & {bytes(r) for r in task.test}
  assert tasks.make_task("lookup").train.shape == (2 ** 20 // 128, 129)  # about a million tokens by default
