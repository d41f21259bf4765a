"""Floor 3, the rollout role: the engines (vLLM, HF) behind one interface, the grounding-crop-answer loop, the
Ray actor. Never imports learner/ (tests/test_layers.py)."""
