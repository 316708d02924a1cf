"""The sample model's tokenizer: shipped in every checkpoint, one token per symbol with task.py's ids."""

from pathlib import Path

import transformers  # test-only dependency: relex_core never imports it
from tokenizers import Tokenizer

from relex_core.sample import task
from relex_core.sample.tokenizer import TOKENIZER_FILES, write_tokenizer

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "sample_data" / "run"


def test_every_checkpoint_ships_the_files_make_run_writes(tmp_path):
    write_tokenizer(tmp_path, model_max_length=32)
    folders = sorted(RUN.glob("checkpoint-*"))
    assert len(folders) == 31
    for folder in folders:
        for name in TOKENIZER_FILES:
            assert (folder / name).read_bytes() == (tmp_path / name).read_bytes(), folder / name


def test_the_tokenizer_is_word_level_over_the_13_symbols_with_the_task_ids():
    tokenizer = Tokenizer.from_file(str(RUN / "checkpoint-0" / "tokenizer.json"))
    assert tokenizer.get_vocab() == task.TOKEN_ID and len(task.TOKEN_ID) == 13
    assert type(tokenizer.model).__name__ == "WordLevel"
    assert tokenizer.encode("042+317=" + task.EOS).ids == task.encode("042+317=") + [task.EOS_ID]
    assert tokenizer.decode(task.encode("0359") + [task.EOS_ID]) == "0359"


def test_transformers_loads_it_and_round_trips_every_held_out_problem():
    tokenizer = transformers.AutoTokenizer.from_pretrained(RUN / "checkpoint-1440", local_files_only=True)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id, len(tokenizer)) == (
        task.EOS_ID, task.EOS_ID, None, len(task.VOCAB))
    records = task.heldout_records()
    prompts = tokenizer([record["prompt"] for record in records])["input_ids"]
    assert prompts == [task.encode(record["prompt"]) for record in records]  # no BOS, no merges
    answers = [task.encode(record["answer"]) + [task.EOS_ID] for record in records]
    assert tokenizer.batch_decode(answers, skip_special_tokens=True) == [record["answer"] for record in records]


def test_the_local_lm_eval_task_holds_the_verifiers_problems_in_its_order():
    import json

    lines = (REPO / "sample_data" / "lm_eval_tasks" / "heldout.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == task.heldout_records()
    assert len(lines) == task.HELDOUT_SIZE
