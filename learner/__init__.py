"""Floor 3, the training role: batching, log-probs, the MGPO step on DeepSpeed, checkpoints, SFT, the Ray
actor. Never imports actors/ (tests/test_layers.py)."""
