"""The sample model's tokenizer as Hugging Face files, so transformers, lm-eval and vLLM load it.

One token per symbol of `task.VOCAB`, with the same ids: a `tokenizers` WordLevel model whose
pre-tokenizer isolates every character, `<eos>` as the one special token, and a decoder that
joins the tokens without spaces (decoding "0359<eos>" gives back "0359", the verifier's answer).
Needs the `tokenizers` package (the `eval` extra); nothing else in relex imports this module.
"""

import json
from pathlib import Path

from . import task

# The two files transformers reads; the export copies both (its SIDE_FILES match tokenizer*.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def build_tokenizer():
    """The `tokenizers.Tokenizer` of the sample task."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab=dict(task.TOKEN_ID), unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(task.EOS, special=True, normalized=False)])
    return tokenizer


def write_tokenizer(folder, model_max_length: int) -> list[Path]:
    """Writes tokenizer.json and tokenizer_config.json into `folder`; returns their paths.

    model_max_length: the config's max_position_embeddings.
    """
    folder = Path(folder)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    # No BOS and no unknown token: the 13 symbols are the whole vocabulary. transformers 5 maps
    # model_type qwen2 to its own tokenizer class whatever tokenizer_class says; that class keeps
    # these ids (every symbol is a single printable byte), which tests/sample checks.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": task.EOS,
              "pad_token": task.EOS, "unk_token": None, "model_max_length": model_max_length,
              "padding_side": "left", "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return [folder / name for name in TOKENIZER_FILES]
