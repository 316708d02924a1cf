"""The shipped sample run: a tiny Qwen2 trained on addition by SFT then GRPO, and its verifier."""
