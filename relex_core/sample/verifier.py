"""Scores any checkpoint folder of the sample model on the fixed held-out addition problems.

Greedy decoding in float32 from the stored weights, so the score of a folder is a
deterministic function of its tensors: make_run.py records exactly this number as
heldout_reward, and extrapolated checkpoints written by other tools are scored the same way.
"""
import time
from pathlib import Path


from relex_core.sample import task
from relex_core.sample.model import generate, load_pretrained


def evaluate_checkpoint(path, n_problems: int | None = None) -> dict:
    """Exact-match accuracy on the first n_problems held-out problems (all of them by default)."""
    start = time.perf_counter()
    path = Path(path)
    model = load_pretrained(path)
    if model.config.vocab_size != len(task.VOCAB):
        raise ValueError(f"{path}: vocab_size {model.config.vocab_size} is not the sample task's {len(task.VOCAB)}")
    pairs = task.heldout_pairs()[:n_problems]
    prompts, targets = task.encode_problems(pairs)
    # One batch for all problems: a few hundred KB of weights, a dozen tokens per sequence.
    completions = generate(model, prompts, task.ANSWER_LEN)
    n_correct = int(task.exact_match_reward(completions, targets).sum())
    return {
        "path": str(path),
        "accuracy": n_correct / len(pairs),
        "n_problems": len(pairs),
        "n_correct": n_correct,
        "seconds": time.perf_counter() - start,
    }


def evaluate_checkpoints(paths) -> list[dict]:
    return [evaluate_checkpoint(p) for p in paths]
