"""Rollout fixtures: a tiny model taught (by real training) to answer one synthetic prompt with a box, so the
real engines walk the whole grounding-crop-answer path; one vLLM engine per test session. A plugin of the
top conftest (pytest_plugins), so each is built once for the session: imported into the conftests of
tests/actors, tests/learner and tests/services/driver, each was built once per folder (3 taught models, 2
vLLM engines alive to the end)."""

from __future__ import annotations

import pytest

from actors.engine import Prompt
from actors.loop import Tokenizer
from mgpo.boxes import Box, check_box
from mgpo.crop import crop_region, full_region, render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.models.tiny import load_policy, load_processor
from mgpo.models.warmup import teach
from mgpo.templates import IM_END, MGPO, first_prompt, followup, multiturn
from tests.conftest import TINY_BUDGET

BOX = (10, 300, 60, 350)  # in the first sample's 448x420 input: covers its red tag
BOX_AS_BOX = Box(*map(float, BOX))
# the multi-turn template's crop request names the image to cut from
REPLY_MT = f'```json\n{{"bbox_2d": [{BOX[0]}, {BOX[1]}, {BOX[2]}, {BOX[3]}], "image": 1}}\n```'
REPLY1 = (
    f'The red tag.\n```json\n[{{"bbox_2d": [{BOX[0]}, {BOX[1]}, {BOX[2]}, {BOX[3]}], "label": "tag"}}]\n```'
)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, 4, 0, progress=False)
    return root


@pytest.fixture(scope="session")
def box_model(tiny_small, synth_data, tmp_path_factory):
    """The tiny model after learning: turn 1 -> REPLY1 (a valid box), turn 2 -> the right letter."""
    processor = load_processor(tiny_small)
    tok = Tokenizer(processor.tokenizer)
    model = load_policy(tiny_small)
    record = next(read_prompts(synth_data))
    original = open_store(synth_data).get(record.images[0])
    view = render_view(original, None, TINY_BUDGET)
    size_in = view_input_size(original.size, None, TINY_BUDGET)
    region = crop_region(check_box(BOX_AS_BOX, size_in), size_in, full_region(original), original.size)
    crop = render_view(original, region, TINY_BUDGET)
    turn1 = Prompt(tok.encode(first_prompt(MGPO, record.question, record.choices)), [view])
    reply1 = tok.encode(REPLY1)
    injected = tok.encode(followup(MGPO, record.question, record.choices, valid=True, reply_closed=False))
    turn2 = Prompt(turn1.ids + reply1 + injected, [view, crop])
    reply2 = tok.encode(
        f"It is {record.choices[ord(record.answer) - 65]}. \\boxed{{{record.answer}}}{IM_END}"
    )
    # multi-turn (one crop allowed): ask for a crop, and after it ask again -> over the limit
    mt = multiturn(1)
    mt1 = Prompt(tok.encode(first_prompt(mt, record.question, record.choices)), [view])
    reply_mt = tok.encode(REPLY_MT)
    mt_injected = tok.encode(followup(mt, record.question, record.choices, valid=True, reply_closed=False))
    mt2 = Prompt(mt1.ids + reply_mt + mt_injected, [view, crop])
    examples = [(turn1, reply1), (turn2, reply2), (mt1, reply_mt), (mt2, reply_mt)]
    teach(model, processor, [(p.ids, p.images, reply) for p, reply in examples], TINY_BUDGET)
    out = tmp_path_factory.mktemp("box-model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def vllm_engine(box_model):
    pytest.importorskip("vllm")
    from actors.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(box_model), 3, TINY_BUDGET)
    yield engine
    engine.close()
