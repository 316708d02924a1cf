from pathlib import Path

import torch
import transformers  # test-only dependency: nothing under relex_core imports it

from relex_core.sample import task
from relex_core.sample.model import load_pretrained

RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def test_forward_matches_transformers_qwen2_logits():
    folder = max(RUN.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    assert type(reference).__name__ == "Qwen2ForCausalLM"
    prompts, answers = task.encode_problems(task.heldout_pairs()[:64])
    ids = torch.cat([prompts, answers], dim=1)  # full sequences, so every position is compared
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        actual = load_pretrained(folder)(ids)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_tied_checkpoint_has_no_lm_head_and_transformers_ties_it():
    folder = RUN / "checkpoint-0"
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    assert reference.lm_head.weight.data_ptr() == reference.model.embed_tokens.weight.data_ptr()


def test_kv_cached_decoding_gives_the_full_forward_logits():
    model = load_pretrained(RUN / "checkpoint-0")
    prompts, answers = task.encode_problems(task.heldout_pairs()[:64])
    with torch.no_grad():
        full = model(torch.cat([prompts, answers], dim=1))
        kv_cache = [{} for _ in model.model.layers]
        steps = [model(prompts, kv_cache)] + [model(answers[:, i:i + 1], kv_cache) for i in range(answers.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
