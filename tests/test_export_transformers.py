"""An exported checkpoint is a model transformers loads, and it computes what the brute-force weights compute."""

import json

import pytest
import torch

from relex_core import WindowFit, compute_gram, open_run
from relex_core.export import extrapolate
from relex_core.io.writer import save_state_dict
from relex_core.synthetic import make_run

from .test_export import brute_force

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The synthetic default: a tiny Qwen2 with tied embeddings and a real config.json."""
    return make_run(tmp_path_factory.mktemp("qwen2") / "run", steps=(10, 20, 30, 40), relative_update=0.05, seed=11)


def load(folder):
    """from_pretrained, insisting that every weight in the folder was used and none was missing."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                                    output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    return model.eval()


@pytest.mark.parametrize("shard_size", ["5GB", "30KB"])
def test_exported_model_loads_and_matches_brute_force_logits(run, tmp_path, shard_size):
    fit = WindowFit(compute_gram(open_run(run), cache_dir=tmp_path / "cache", progress=False), window="10:40", rank=2)
    result, = extrapolate(fit, [60], tmp_path / "relex", shard_size=shard_size, progress=False)
    assert (result.path / "model.safetensors.index.json").is_file() == (shard_size == "30KB")

    expected = brute_force(run, [10, 20, 30, 40], [60], rank=2)[60]
    reference = tmp_path / "brute"
    save_state_dict({name: torch.from_numpy(value).to(torch.float32) for name, value in expected.items()}, reference)
    (reference / "config.json").write_text((run / "checkpoint-40" / "config.json").read_text())

    exported, brute = load(result.path), load(reference)
    assert exported.config.tie_word_embeddings and exported.lm_head.weight.data_ptr() == \
        exported.model.embed_tokens.weight.data_ptr()
    tokens = torch.randint(0, exported.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, reference_logits = exported(tokens).logits, brute(tokens).logits
    assert logits.shape == (2, 12, exported.config.vocab_size)
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-6)
    # and the extrapolation really moved the model: the base computes something else
    with torch.no_grad():
        base_logits = load(run / "checkpoint-0")(tokens).logits
    assert (logits - base_logits).abs().max() > 1e3 * (logits - reference_logits).abs().max()
    assert json.loads((result.path / "relex.json").read_text())["target_step"] == 60
