import hashlib

import numpy as np
import torch

from relex_core.sample import task

HELDOUT_SHA256_PREFIX = "147f240e39a9b50a"


def test_problems_are_fixed_width_with_end_token():
    prompts, answers = task.encode_problems(np.array([[42, 317], [999, 999]]))
    assert [task.decode(p) for p in prompts.tolist()] == ["042+317=", "999+999="]
    assert [task.decode(a) for a in answers.tolist()] == ["0359<eos>", "1998<eos>"]
    assert prompts.shape[1] == task.PROMPT_LEN and answers.shape[1] == task.ANSWER_LEN


def test_heldout_problem_set_never_changes():
    # The recorded heldout_reward of every shipped checkpoint depends on exactly these pairs.
    pairs = task.heldout_pairs()
    assert pairs.shape == (task.HELDOUT_SIZE, 2)
    assert len({tuple(p) for p in pairs.tolist()}) == task.HELDOUT_SIZE
    assert hashlib.sha256(pairs.astype(np.int64).tobytes()).hexdigest()[:16] == HELDOUT_SHA256_PREFIX


def test_training_prompts_never_include_heldout_problems():
    heldout = {tuple(p) for p in task.heldout_pairs().tolist()}
    drawn = task.training_pair_sampler(seed=0)(50_000)
    assert not heldout & {tuple(p) for p in drawn.tolist()}


def test_reward_is_exact_match_including_end_token():
    _, target = task.encode_problems(np.array([[1, 2]]))  # "0003<eos>"
    wrong_digit, no_end = target.clone(), target.clone()
    wrong_digit[0, 2] = task.TOKEN_ID["1"]
    no_end[0, -1] = task.TOKEN_ID["0"]
    completions = torch.cat([target, wrong_digit, no_end])
    assert task.exact_match_reward(completions, target.expand(3, -1)).tolist() == [1.0, 0.0, 0.0]

