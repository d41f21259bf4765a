import numpy as np
import pytest

from mgpo.masks import Segment, Source, assistant_mask, build_sequence
from mgpo.templates import (
    BOX_STOP,
    GRPO,
    MGPO,
    Mode,
    first_prompt,
    followup,
    format_choices,
    multiturn,
    template_for,
)

CHOICES = ("red", "blue", "green")


def test_format_choices_letters_each_option():
    assert format_choices(CHOICES) == "(A) red\n(B) blue\n(C) green"


def test_template_for_picks_the_mode_once():
    assert template_for(Mode.MGPO) is MGPO and template_for(Mode.GRPO) is GRPO
    assert template_for(Mode.MULTITURN, 3).max_crops == 3
    with pytest.raises(ValueError, match="max_crops >= 1"):
        multiturn(0)


IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def test_mgpo_texts_are_the_papers_word_for_word():
    # arXiv 2507.05920, Figure 2 (the template) and Figure 8 (a full conversation of the released model)
    turn1 = first_prompt(MGPO, "What is on the tag?", CHOICES)
    assert turn1 == (
        "<|im_start|>system\nYou are a helpful assistant. Given an image and one question. First, identify the "
        "coordinates of the key image area relevant to solving the problem. Append the coordinates in JSON "
        "format at the end of your response and stop. This will trigger cropping of the corresponding area in "
        "the original image and enlarge it for improved clarity. Once the enlarged image is available, provide "
        "the final answer (A, B, C, D, or E) enclosed within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE}Question: What is on the tag?\nOut the coordinates of the key image area "
        "relevant to the problem in JSON format.<|im_end|>\n<|im_start|>assistant\n"
    )
    choices = "The choices are listed below:\n(A) red\n(B) blue\n(C) green\n"
    answer = "provide the final answer (A, B, C, D, or E) enclosed within \\boxed{}."
    turn2 = followup(MGPO, "What is on the tag?", CHOICES, valid=True, reply_closed=False)
    assert turn2 == (
        "<|im_end|>\n<|im_start|>user\nBased on the provided coordinates, return the sub-image: "
        f"{IMAGE}Question: What is on the tag?\n{choices}Carefully analyze both the original image and the "
        "enlarged sub-image to solve the question step by step. If the sub-image does not provide sufficient "
        "information, refer to the original image to find the solution. Present your reasoning clearly, and "
        f"{answer}<|im_end|>\n<|im_start|>assistant\n"
    )
    retry = followup(MGPO, "What is on the tag?", CHOICES, valid=False, reply_closed=True)
    assert retry == (
        "\n<|im_start|>user\nNot providing correct coordinates or invalid coordinate values, return the original "
        f"image: {IMAGE}Question: What is on the tag?\n{choices}Carefully analyze the original image to solve "
        f"the question step by step. Present your reasoning clearly, and {answer}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_grpo_baseline_is_the_question_and_the_papers_post_prompt():
    prompt = first_prompt(GRPO, "What is on the tag?", CHOICES)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE}What is on the tag?\nThe choices are listed below:\n(A) red\n(B) blue\n"
        "(C) green\nOutput the coordinates of the key image area relevant to the problem in JSON format. And put "
        "the answer letter (A, B, C, D, or E) within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_box_stop_strings_do_not_fire_on_the_opening_fence():
    reply = 'Key region:\n```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "tag"}]\n```'
    opening = reply[: reply.index("[")]
    assert not any(stop in opening for stop in BOX_STOP)
    first_hit = min(reply.find(stop) + len(stop) for stop in BOX_STOP if stop in reply)
    assert first_hit == len(reply)


def test_rendered_prompts_equal_the_chat_template(qwen_tok):
    question = "What is on the tag?"
    turn1 = first_prompt(MGPO, question, CHOICES)
    messages = [
        {"role": "system", "content": MGPO.system},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": MGPO.first.format(question=question)}],
        },
    ]
    assert qwen_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == turn1


def test_token_exact_two_turn_sequence_has_the_chat_template_ids_and_assistant_mask(qwen_tok):
    question = "What is on the tag?"
    reply1 = 'Here.\n```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "tag"}]\n```'
    reply2 = "It shows a K. \\boxed{B}"
    im_end = qwen_tok.convert_tokens_to_ids("<|im_end|>")
    encode = lambda text: qwen_tok(text, add_special_tokens=False).input_ids  # noqa: E731
    gen1, gen2 = encode(reply1) + [im_end], encode(reply2) + [im_end]
    segments = [
        Segment(Source.PROMPT, encode(first_prompt(MGPO, question, CHOICES))),
        Segment(Source.GENERATED, gen1, [-0.1] * len(gen1)),
        Segment(Source.INJECTED, encode(followup(MGPO, question, CHOICES, valid=True, reply_closed=True))),
        Segment(Source.GENERATED, gen2, [-0.2] * len(gen2)),
    ]
    seq = build_sequence(segments)
    text_turn2 = MGPO.after_crop.format(question=question, choices=format_choices(CHOICES))
    turn2 = [
        {"type": "text", "text": MGPO.crop_intro},
        {"type": "image"},
        {"type": "text", "text": text_turn2},
    ]
    messages = [
        {"role": "system", "content": MGPO.system},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": MGPO.first.format(question=question)}],
        },
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": turn2},
        {"role": "assistant", "content": reply2},
    ]
    rendered = qwen_tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(rendered["input_ids"])
    # the chat template ends each assistant turn with "<|im_end|>\n"; our sequence stops at <|im_end|>
    assert seq.ids.tolist() == ids[:-1]
    assert seq.loss_mask.tolist() == [bool(m) for m in rendered["assistant_masks"][:-1]]
    oracle = assistant_mask(
        ids, qwen_tok.convert_tokens_to_ids("<|im_start|>"), im_end, encode("assistant\n")
    )
    assert np.array_equal(seq.loss_mask, oracle[:-1])
    assert seq.logprobs[seq.loss_mask].tolist() == pytest.approx([-0.1] * len(gen1) + [-0.2] * len(gen2))
    assert not seq.loss_mask[[i for i, t in enumerate(ids[:-1]) if t == 151655]].any()  # image tokens


def test_build_sequence_masks_out_over_turn_trajectories_and_checks_logprobs():
    segments = [Segment(Source.PROMPT, [1, 2]), Segment(Source.GENERATED, [3, 4], [-1.0, -2.0])]
    assert build_sequence(segments).loss_mask.tolist() == [False, False, True, True]
    assert not build_sequence(segments, keep=False).loss_mask.any()
    with pytest.raises(ValueError, match="behaviour logprob"):
        build_sequence([Segment(Source.GENERATED, [3, 4], [-1.0])])


def test_expand_image_pads_repeats_each_pad_by_its_token_count():
    from mgpo.masks import Sequence, expand_image_pads

    pad = 9
    seq = Sequence(
        np.array([1, pad, 2, pad, 3], np.int32),
        np.array([0, 0, 1, 0, 1], bool),
        np.array([0, 0, -1, 0, -2], np.float32),
    )
    out = expand_image_pads(seq, pad, [2, 3])
    assert out.ids.tolist() == [1, 9, 9, 2, 9, 9, 9, 3]
    assert out.loss_mask.tolist() == [False, False, False, True, False, False, False, True]
    assert out.logprobs.tolist() == [0, 0, 0, -1, 0, 0, 0, -2]
    with pytest.raises(ValueError, match="2 image pads"):
        expand_image_pads(seq, pad, [1])


def test_the_box_hint_is_an_opt_in_addition_to_the_papers_turn_one():
    from mgpo.templates import BOX_HINT, with_box_hint

    hinted = first_prompt(with_box_hint(MGPO), "Q?", CHOICES)
    assert hinted == first_prompt(MGPO, "Q?", CHOICES).replace(
        "in JSON format.<|im_end|>",
        'in JSON format.\n```json\n[{"bbox_2d": [x1, y1, x2, y2], "label": "key image area"}]\n```<|im_end|>',
    )
    assert "{{" in BOX_HINT and with_box_hint(GRPO).first.endswith(BOX_HINT)
    with pytest.raises(ValueError, match="multiturn states its own JSON"):
        with_box_hint(multiturn(2))
