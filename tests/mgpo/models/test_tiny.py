import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from mgpo.models.tiny import SIZES, load_policy, load_processor
from mgpo.models.tokenizer import PLAIN_ADDED_TOKENS, SPECIAL_TOKENS, small_tokenizer
from services.cli import TINY_SIZES

pytestmark = pytest.mark.slow


def test_qwen_tokenizer_ids_match_the_real_qwen25(qwen_tok):
    assert qwen_tok("Hello, world!").input_ids == [9707, 11, 1879, 0]
    ids = qwen_tok.convert_tokens_to_ids(list(SPECIAL_TOKENS + PLAIN_ADDED_TOKENS))
    assert ids == list(range(151643, 151665))
    assert qwen_tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert qwen_tok.eos_token == "<|im_end|>" and qwen_tok.pad_token_id == 151643
    # Qwen2 splits digits one by one
    assert qwen_tok("12345").input_ids == [16, 17, 18, 19, 20]


def test_small_tokenizer_keeps_special_tokens_whole_and_round_trips_any_text():
    tok = small_tokenizer(["the red tag", "bbox_2d"], vocab_size=400)
    text = "<|im_start|>user\nÜnïcödé 你好 \\boxed{B}<|im_end|>"
    ids = tok(text).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(ids) == text


def test_cli_size_choices_match_the_model_sizes():
    assert sorted(TINY_SIZES) == sorted(SIZES)


def test_tiny_model_round_trips_bit_exactly_through_hf_layout(tiny_qwen):
    model = load_policy(tiny_qwen)
    again = load_policy(tiny_qwen)
    assert model.config.model_type == "qwen2_5_vl"
    assert model.config.text_config.vocab_size == 151936
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    assert tok("Hello, world!").input_ids == [9707, 11, 1879, 0]


def test_tiny_model_forward_and_generate_with_an_image(tiny_small):
    processor = load_processor(tiny_small)
    model = load_policy(tiny_small).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (420, 448, 3), dtype=np.uint8))
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    # 448x420 -> grid (1, 30, 32) -> 240 visual tokens after the 2x2 merge
    assert inputs["image_grid_thw"].tolist() == [[1, 30, 32]]
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 240
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert (
        out.shape[1] == inputs["input_ids"].shape[1] + 8
        or processor.tokenizer.eos_token_id in out[0].tolist()
    )
