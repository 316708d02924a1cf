"""The verifiable task of the sample run: three-digit addition with an exact-match reward.

Every problem is written with zero-padded fixed widths, "042+317=" -> "0359<eos>",
so all prompts and all answers have the same length: batches need no padding and
no attention mask, and generation always runs for exactly ANSWER_LEN tokens.
"""
import hashlib

import numpy as np
import torch

OPERAND_DIGITS = 3
SUM_DIGITS = OPERAND_DIGITS + 1  # 999+999 = 1998 needs one digit more
EOS = "<eos>"
VOCAB = list("0123456789+=") + [EOS]  # one token per character, plus the end token
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}
EOS_ID = TOKEN_ID[EOS]
PROMPT_LEN = 2 * OPERAND_DIGITS + 2  # "ddd+ddd="
ANSWER_LEN = SUM_DIGITS + 1  # "dddd<eos>"

N_OPERANDS = 10**OPERAND_DIGITS
HELDOUT_SIZE = 1000


def prompt_text(a: int, b: int) -> str:
    return f"{a:0{OPERAND_DIGITS}d}+{b:0{OPERAND_DIGITS}d}="


def answer_text(a: int, b: int) -> str:
    return f"{a + b:0{SUM_DIGITS}d}"


def encode(text: str) -> list[int]:
    return [TOKEN_ID[ch] for ch in text]


def decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids)


def heldout_pairs() -> np.ndarray:
    """The verifier's problems: HELDOUT_SIZE distinct (a, b) pairs, always the same ones.

    Drawn by hashing a counter rather than with numpy's generators, whose streams may
    change between numpy versions: the recorded heldout_reward values depend on this set.
    """
    flat, i = {}, 0
    while len(flat) < HELDOUT_SIZE:
        digest = hashlib.sha256(f"relex-sample-heldout-{i}".encode()).digest()
        flat.setdefault(int.from_bytes(digest[:8], "big") % N_OPERANDS**2, None)  # dict: ordered, distinct
        i += 1
    flat = np.array(list(flat))
    return np.stack([flat // N_OPERANDS, flat % N_OPERANDS], axis=1)


def heldout_records() -> list[dict]:
    """The held-out problems as text, in the verifier's order: [{"prompt": "042+317=", "answer": "0359"}, ...]."""
    return [{"prompt": prompt_text(a, b), "answer": answer_text(a, b)} for a, b in heldout_pairs().tolist()]


def training_pair_sampler(seed: int):
    """Returns draw(n) -> (n, 2) array of (a, b) pairs, never one of the held-out pairs."""
    heldout = heldout_pairs()
    heldout_flat = heldout[:, 0] * N_OPERANDS + heldout[:, 1]
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        flat = rng.integers(0, N_OPERANDS * N_OPERANDS, size=n)
        # Redraw the rare collisions (1000 of 10^6 pairs) until none is held out.
        while (clash := np.isin(flat, heldout_flat)).any():
            flat[clash] = rng.integers(0, N_OPERANDS * N_OPERANDS, size=int(clash.sum()))
        return np.stack([flat // N_OPERANDS, flat % N_OPERANDS], axis=1)

    return draw


def encode_problems(pairs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) pairs -> prompt ids (n, PROMPT_LEN) and target answer ids (n, ANSWER_LEN)."""
    prompts = [encode(prompt_text(a, b)) for a, b in pairs.tolist()]
    answers = [encode(answer_text(a, b)) + [EOS_ID] for a, b in pairs.tolist()]
    return torch.tensor(prompts), torch.tensor(answers)


def exact_match_reward(completions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1.0 where every generated token (digits and the end token) equals the target, else 0.0."""
    return (completions == targets).all(dim=1).float()
