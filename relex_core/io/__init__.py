"""Input and output: finding runs, reading tensors lazily, writing checkpoints."""
