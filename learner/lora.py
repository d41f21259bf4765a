"""LoRA adapters on the policy (peft), and their merge into a plain HF folder.

The multi-image grounding recipe (arXiv 2507.00748) fine-tunes with LoRA, merges, then rolls out the merged
model: `mgpo merge` writes a folder that vLLM, `mgpo eval` and `model.path` load like any checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from mgpo.models.tiny import load_policy, load_processor
from runtime.config import LoraSection

ADAPTER_CONFIG = "adapter_config.json"


def target_pattern(lora: LoraSection) -> str:
    """peft's target_modules as one regex: the named projections, of the language model only when the
    vision tower is frozen (Qwen2.5-VL's vision blocks have gate/up/down_proj too)."""
    names = "|".join(lora.target_modules)
    scope = r".*\.language_model\..*" if lora.freeze_vision else r".*"
    return rf"{scope}\.({names})"


def add_lora(model: torch.nn.Module, lora: LoraSection) -> PeftModel:
    """Wrap `model` with fresh adapters; only they train (every base weight is frozen)."""
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_pattern(lora),
        modules_to_save=list(lora.modules_to_save) or None,
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # no module matched
        raise ValueError(f"lora.target_modules {list(lora.target_modules)} match no layer: {err}") from err


def load_adapter(base: str | os.PathLike[str], adapter: str | os.PathLike[str], trainable: bool) -> PeftModel:
    """`adapter` (a peft folder) on the model at `base`, with a clear error when they do not fit."""
    adapter = Path(adapter)
    if not (adapter / ADAPTER_CONFIG).exists():
        raise FileNotFoundError(f"{adapter}: no {ADAPTER_CONFIG}: not a LoRA adapter folder")
    model = load_policy(base)
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"the adapter {adapter} does not fit the model at {base}: {str(err)[:300]}") from err


def adapter_base(adapter: str | os.PathLike[str]) -> str:
    """The base model folder an adapter was trained on, as peft recorded it."""
    path = Path(adapter) / ADAPTER_CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{adapter}: no {ADAPTER_CONFIG}: not a LoRA adapter folder")
    base = json.loads(path.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path} does not name its base model: pass --base")
    return str(base)


def merge(adapter: str | os.PathLike[str], out: str | os.PathLike[str], base: str | None = None) -> Path:
    """Fold `adapter` into its base model's weights and write a plain HF folder (weights + processor)."""
    base = base or adapter_base(adapter)
    if not (Path(base) / "config.json").exists():
        raise FileNotFoundError(f"base model {base}: no config.json (pass --base with the model folder)")
    merged = load_adapter(base, adapter, trainable=False).merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    load_processor(base).save_pretrained(out)
    return out
