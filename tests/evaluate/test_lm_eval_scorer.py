"""A real lm-evaluation-harness run on CPU through `relex evaluate --lm-eval`, offline, on the sample run."""

import subprocess
import sys

from relex_core.evaluate import read_scores
from relex_core.evaluate.lm_eval_scorer import metrics_of
from relex_core.sample.tokenizer import TOKENIZER_FILES

from .scripts import REPO, relex_evaluate

RUN = REPO / "sample_data" / "run"
TASKS = REPO / "sample_data" / "lm_eval_tasks"
LIMIT = 40


def test_lm_eval_scores_two_checkpoints_and_an_export_exactly_as_the_sample_verifier(tmp_path):
    export = tmp_path / "export"
    made = subprocess.run([sys.executable, "-m", "relex_core", "extrapolate", RUN, "--window", "0:720", "--target",
                           "1440", "--out", export, "--cache-dir", tmp_path / "cache", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    for name in TOKENIZER_FILES:  # the export loads as a standard HF model: it carries the tokenizer
        assert (export / name).read_bytes() == (RUN / "checkpoint-720" / name).read_bytes()

    folders = [RUN / "checkpoint-0", RUN / "checkpoint-1440", export]
    # One thread: the model is tiny, and on the shared 2-core machine the verifier ran 7x slower on two.
    one_thread = {"OMP_NUM_THREADS": "1"}
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), **one_thread}
    scored = relex_evaluate(*folders, "--lm-eval", "relex_sample_addition", "--lm-eval-include", TASKS,
                            "--lm-eval-args", "dtype=float32,batch_size=64", "--limit", LIMIT, "--device", "cpu",
                            "--out", tmp_path / "scores.csv", "--quiet", env=offline)
    assert scored.returncode == 0, scored.stderr[-3000:]
    verified = relex_evaluate(*folders, "--sample", "--limit", LIMIT, "--out", tmp_path / "scores.csv", "--quiet",
                              env=one_thread)
    assert verified.returncode == 0, verified.stderr

    table = read_scores(tmp_path / "scores.csv")
    lm_eval = table[table.scorer.str.startswith("lm-eval relex_sample_addition")].reset_index(drop=True)
    sample = table[table.scorer == f"sample limit={LIMIT}"].reset_index(drop=True)
    assert lm_eval.metric.tolist() == ["relex_sample_addition/exact_match"] * 3
    assert lm_eval.path.tolist() == sample.path.tolist() == [str(folder) for folder in folders]
    assert lm_eval.value.tolist() == sample.value.tolist()  # checkpoint by checkpoint, the same problems
    assert lm_eval.stderr.round(12).tolist() == sample.stderr.round(12).tolist()
    assert len(set(sample.value)) == 3  # three different models, so the match is not a coincidence
    assert lm_eval.kind.tolist() == ["checkpoint", "checkpoint", "relex"]
    assert lm_eval.step.tolist() == [0, 1440, 1440] and lm_eval.target_step.isna().tolist() == [True, True, False]
    assert lm_eval.window.iloc[2] == "48:720"


def test_every_metric_of_every_task_and_group_becomes_a_row_with_its_stderr():
    results = {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05,
                         "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": "N/A"},
               "mmlu": {"alias": "mmlu", "acc,none": 0.6, "acc_stderr,none": 0.01, "sample_len": 100}}
    assert [tuple(metric) for metric in metrics_of(results)] == [
        ("gsm8k/exact_match/strict-match", 0.25, 0.05), ("gsm8k/exact_match/flexible-extract", 0.5, None),
        ("mmlu/acc", 0.6, 0.01)]
