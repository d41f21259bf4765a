import numpy as np
import pytest

from actors.hf_engine import HFEngine
from actors.loop import Loop, RolloutSettings, Tokenizer
from mgpo.boxes import Box
from mgpo.crop import render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts
from mgpo.records import PromptRecord, TaskKind
from mgpo.resize import PixelBudget
from mgpo.templates import GRPO, MGPO, VISION_TOKENS, first_prompt, followup, multiturn
from tests.conftest import TINY_BUDGET
from tests.rollout_fixtures import BOX, REPLY1, REPLY_MT

pytestmark = pytest.mark.slow


def _loop(engine, synth_data, template=MGPO, n=2, temperature=0.0, max_turn_tokens=48):
    tok = Tokenizer(engine.tokenizer if hasattr(engine, "tokenizer") else engine.llm.get_tokenizer())
    settings = RolloutSettings(
        template, TINY_BUDGET, n=n, max_turn_tokens=max_turn_tokens, temperature=temperature
    )
    return Loop(engine, tok, open_store(synth_data), settings, actor="test"), tok


@pytest.fixture(scope="module")
def hf_box(box_model):
    return HFEngine(str(box_model), TINY_BUDGET)


def test_mgpo_two_turn_sequence_is_token_exact_and_crops_the_original_at_the_box(vllm_engine, synth_data):
    loop, tok = _loop(vllm_engine, synth_data)
    record = next(read_prompts(synth_data))
    group = loop.rollout([record], seed=0)[0]
    sample = group.samples[0]
    assert sample.text[0] == REPLY1 and sample.valid_grounding and sample.turns == 2
    # the crop is the box mapped from the 448x420 input to the original and snapped outward
    original = open_store(synth_data).get(record.images[0])
    size_in = view_input_size(original.size, None, TINY_BUDGET)
    sx, sy = original.width / size_in[0], original.height / size_in[1]
    region = sample.views[1].region
    assert sample.views[0].region is None and sample.views[1].image == record.images[0]
    assert region == Box(
        np.floor(BOX[0] * sx), np.floor(BOX[1] * sy), np.ceil(BOX[2] * sx), np.ceil(BOX[3] * sy)
    )
    assert np.array_equal(
        np.asarray(render_view(original, region, TINY_BUDGET)),
        np.asarray(
            original.crop(tuple(map(int, region))).resize(render_view(original, region, TINY_BUDGET).size, 3)
        ),
    )
    # ids = turn-1 prompt + sampled + injected + sampled, nothing re-encoded
    prompt = tok.encode(first_prompt(MGPO, record.question, record.choices))
    injected = tok.encode(followup(MGPO, record.question, record.choices, valid=True, reply_closed=False))
    reply1 = tok.encode(REPLY1)
    ids = sample.ids.tolist()
    assert ids[: len(prompt)] == prompt
    assert ids[len(prompt) : len(prompt) + len(reply1)] == reply1
    start2 = len(prompt) + len(reply1)
    assert ids[start2 : start2 + len(injected)] == injected
    mask = sample.loss_mask
    assert not mask[: len(prompt)].any() and mask[len(prompt) : start2].all()
    assert not mask[start2 : start2 + len(injected)].any() and mask[start2 + len(injected) :].all()
    assert (sample.logprobs[~mask] == 0).all() and (sample.logprobs[mask] <= 0).all()
    # the taught answer is right: reward 1 from the last \boxed{}
    assert sample.reward == 1.0 and sample.finish_reason == "stop" and sample.text[1].endswith("<|im_end|>")
    assert group.policy_version == vllm_engine.version and len(group.samples) == 2


def test_hf_and_vllm_loops_produce_the_same_greedy_trajectory(vllm_engine, hf_box, synth_data):
    record = next(read_prompts(synth_data))
    a = _loop(vllm_engine, synth_data)[0].rollout([record], seed=0)[0].samples[0]
    b = _loop(hf_box, synth_data)[0].rollout([record], seed=0)[0].samples[0]
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.loss_mask, b.loss_mask)
    assert np.abs(a.logprobs - b.logprobs).max() < 1e-4


def test_bad_model_output_is_scored_invalid_and_never_crashes(vllm_engine, synth_data):
    loop, _ = _loop(vllm_engine, synth_data, n=3, temperature=1.0, max_turn_tokens=24)
    records = list(read_prompts(synth_data))[1:4]  # prompts the model was never taught: it babbles
    groups = loop.rollout(records, seed=1)
    assert [g.prompt_id for g in groups] == [r.id for r in records]
    vision = vllm_engine.llm.get_tokenizer().convert_tokens_to_ids(list(VISION_TOKENS))
    for sample in (s for g in groups for s in g.samples):
        assert not np.isin(sample.ids[sample.loss_mask], vision).any()  # never sampled
        assert not sample.valid_grounding and sample.reward == 0.0 and sample.turns == 2
        assert sample.views[1].region is None  # the original again after an invalid box
        assert sample.finish_reason in ("stop", "length")


def test_grpo_is_single_turn_and_scores_the_box_in_the_same_reply(hf_box, synth_data):
    loop, _ = _loop(hf_box, synth_data, template=GRPO, n=2, max_turn_tokens=16)
    sample = loop.rollout([next(read_prompts(synth_data))], seed=0)[0].samples[0]
    assert sample.turns == 1 and len(sample.views) == 1 and sample.reward == 0.0


def test_multiturn_masks_out_trajectories_that_ask_for_too_many_crops(hf_box, synth_data):
    # taught: crop request on turn 1, and another after the crop; with one crop allowed that is over-turn
    loop, _ = _loop(hf_box, synth_data, template=multiturn(1), n=1, max_turn_tokens=40)
    sample = loop.rollout([next(read_prompts(synth_data))], seed=0)[0].samples[0]
    assert sample.text == (REPLY_MT, REPLY_MT)
    assert sample.views[1].region is not None and sample.valid_grounding
    assert sample.finish_reason == "over_turn" and sample.turns == 2
    assert not sample.loss_mask.any()  # masked out of the loss, not punished with a reward


def test_multiturn_ends_a_request_without_a_valid_box_at_reward_0_when_told(hf_box, synth_data):
    # at 100 x 28^2 pixels (input ~280 px tall, not the taught 448x420) the taught model's crop request
    # comes out malformed: a request (it stops at the closing fence) with no valid box
    tok = Tokenizer(hf_box.tokenizer)
    small = PixelBudget(min_pixels=64 * 28 * 28, max_pixels=100 * 28 * 28)
    record = next(read_prompts(synth_data))
    samples = {}
    for rule in ("end", "original"):
        settings = RolloutSettings(multiturn(1), small, n=1, max_turn_tokens=40, invalid_crop=rule)
        loop = Loop(hf_box, tok, open_store(synth_data), settings)
        samples[rule] = loop.rollout([record], seed=0)[0].samples[0]
    ended, shown = samples["end"], samples["original"]
    assert ended.text[0] == shown.text[0] and ended.text[0].endswith("```") and not ended.valid_grounding
    # ended: one turn, reward 0, kept in the loss (the penalty)
    assert (ended.finish_reason, ended.turns, ended.reward) == ("invalid_crop", 1, 0.0)
    assert ended.loss_mask.any()
    # the paper's rule: the original again and another turn
    assert shown.turns == 2 and shown.views[1].region is None and shown.finish_reason != "invalid_crop"


def test_counting_records_roll_out_single_turn_with_the_counting_reward(hf_box, synth_data, tmp_path):
    record = next(read_prompts(synth_data))
    counting = PromptRecord("c1", TaskKind.COUNTING, "How many red discs?", record.images, "3")
    loop, _ = _loop(hf_box, synth_data, n=1, max_turn_tokens=8)
    sample = loop.rollout([counting, record], seed=0)[0].samples[0]
    assert sample.turns == 1 and sample.reward == 0.0 and not sample.valid_grounding


def test_a_prompt_whose_images_leave_no_room_is_masked_as_over_length_not_sent(hf_box, synth_data):
    import dataclasses

    tok = Tokenizer(hf_box.tokenizer)
    record = next(read_prompts(synth_data))
    question_ids = len(tok.encode(first_prompt(MGPO, record.question, record.choices)))
    image_tokens = (
        448 * 420 // (28 * 28)
    )  # the 448x420 input of this set: 240 visual tokens, one placeholder id
    # room for the prompt ids and a turn, but not once the image's tokens are counted
    settings = RolloutSettings(
        MGPO, TINY_BUDGET, n=2, max_turn_tokens=16, max_model_len=question_ids + 16 + 100
    )
    loop = Loop(hf_box, tok, open_store(synth_data), settings)
    (group,) = loop.rollout([record], seed=0)
    assert image_tokens > 100
    assert [s.finish_reason for s in group.samples] == ["over_length", "over_length"]
    assert all(not s.loss_mask.any() and s.turns == 0 for s in group.samples)  # masked, never generated
    roomy = dataclasses.replace(settings, max_model_len=question_ids + image_tokens + 16 + 16)
    (group,) = Loop(hf_box, tok, open_store(synth_data), roomy).rollout([record], seed=0)
    assert all(s.turns >= 1 for s in group.samples)


def test_the_grounding_format_reward_fires_through_the_loop(tiny_small, tmp_path):
    # a model taught one multi-image grounding answer in the paper's format; its reply reaches the reward
    # with the end-of-turn token the loop keeps, which used to make the format reward always 0
    from mgpo.data.dataset import write_synthetic
    from mgpo.models.tiny import load_policy, load_processor
    from mgpo.models.warmup import teach
    from mgpo.templates import GROUNDING_PROMPT, IM_END, single_prompt

    data = write_synthetic(tmp_path / "mig", 1, 0, task="grounding", progress=False)
    record = next(read_prompts(data))
    store = open_store(data)
    views = [render_view(store.get(h), None, TINY_BUDGET) for h in record.images]
    target = int(record.answer)
    w, h = views[target - 1].size
    box = record.target_box
    answer = [round(box.x1 * w), round(box.y1 * h), round(box.x2 * w), round(box.y2 * h)]
    reply = (
        f'<think>It is in image {target}.</think><answer>{{"image": {target}, "bbox_2d": {answer}}}</answer>'
    )
    processor = load_processor(tiny_small)
    tok = Tokenizer(processor.tokenizer)
    prompt = tok.encode(single_prompt(GROUNDING_PROMPT.format(question=record.question), len(views)))
    model = load_policy(tiny_small)
    teach(model, processor, [(prompt, views, tok.encode(reply + IM_END))], TINY_BUDGET)
    model.save_pretrained(tmp_path / "mig-model")
    processor.save_pretrained(tmp_path / "mig-model")

    engine = HFEngine(str(tmp_path / "mig-model"), TINY_BUDGET)
    settings = RolloutSettings(MGPO, TINY_BUDGET, n=1, max_turn_tokens=64, temperature=0.0)
    (group,) = Loop(engine, tok, store, settings).rollout([record], seed=0)
    (sample,) = group.samples
    assert sample.text[0] == reply + IM_END
    assert sample.reward == pytest.approx(0.5 + 1.0, abs=0.05)  # format 1 (x 0.5) + IoU ~1 with the true box
    assert sample.valid_grounding and sample.right_image and sample.answer_iou == pytest.approx(1.0, abs=0.05)
    assert sample.answer_image == target and sample.answer_box == pytest.approx(box, abs=0.02)
    # the thresholded accuracy reward and another format weight, as the config says
    thresholded = RolloutSettings(
        MGPO,
        TINY_BUDGET,
        n=1,
        max_turn_tokens=64,
        temperature=0.0,
        iou_reward="thresholded",
        format_weight=0.2,
    )
    (group,) = Loop(engine, tok, store, thresholded).rollout([record], seed=0)
    assert group.samples[0].reward == pytest.approx(0.2 + 1.0)
