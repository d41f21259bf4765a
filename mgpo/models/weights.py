"""Policy weights as one safetensors file of HF-named tensors: what engines load and broadcasts carry."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file
from transformers import PreTrainedModel


def policy_state(model: PreTrainedModel) -> dict[str, object]:
    """The model's tensors, without the tied lm_head copy (safetensors refuses shared storage; loaders
    re-tie it)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.get_text_config().tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_weights(model: PreTrainedModel, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(policy_state(model), str(path))  # type: ignore[arg-type]
    return path
