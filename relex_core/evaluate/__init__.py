"""Score checkpoints and exports with the user's benchmark, into scores.csv.

    from relex_core.evaluate import score, SampleScorer, CommandScorer, LmEvalScorer, read_scores
    score(["runs/grpo/checkpoint-480", "exports/grpo"], LmEvalScorer(tasks=("gsm8k",), limit=200),
          out="scores.csv")
    read_scores("scores.csv")

Scorers (one module each): the sample verifier, any shell command, lm-evaluation-harness. The
table, fingerprints and skip logic are in scores.py; what a folder stands for in folders.py.
Importing this package never imports lm_eval (the optional `eval` extra) nor torch.
"""

from .command import CommandScorer
from .folders import Folder, describe_folder, expand_paths
from .lm_eval_scorer import LmEvalScorer
from .sample import SampleScorer
from .scorer import Cancelled, Metric, Scorer
from .scores import COLUMNS, ScoresFile, fingerprint, read_scores
from .scoring import Outcome, score, score_folders

__all__ = ["COLUMNS", "Cancelled", "CommandScorer", "Folder", "LmEvalScorer", "Metric", "Outcome", "SampleScorer",
           "Scorer", "ScoresFile", "describe_folder", "expand_paths", "fingerprint", "read_scores", "score",
           "score_folders"]
