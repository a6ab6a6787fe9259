"""The generated sequence tasks: correct answers, determinism, held-out prompts, exact match, bad arguments."""

import numpy as np
import pytest

from jaxbp.train import tasks


@pytest.mark.parametrize("name", tasks.TASKS)
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
  with pytest.raises(tasks.TaskError, match="task must be one of reverse, sort, add; got 'copy'"):
    tasks.make_task("copy")
  with pytest.raises(tasks.TaskError, match="task length must be an integer in 1..32, got 0"):
    tasks.make_task("sort", length=0)
  with pytest.raises(tasks.TaskError, match="num_test must be a positive integer"):
    tasks.make_task("sort", num_test=0)
  with pytest.raises(tasks.TaskError, match="only 10\\^2 distinct prompts exist"):
    tasks.make_task("reverse", length=2, num_train=60, num_test=10)
