import importlib.metadata
import threading

import pytest
import torch
import torch.distributed as dist
from PIL import Image

from actors import vllm_compat
from actors.engine import Prompt, Sampling
from actors.hf_engine import HFEngine
from actors.loop import Tokenizer
from mgpo.crop import render_view
from mgpo.data.dataset import open_store, read_prompts
from mgpo.models.tiny import load_policy
from mgpo.models.weights import policy_state, save_weights
from mgpo.templates import MGPO, first_prompt, followup
from runtime.broadcast import Address, join, plan_for, send, wire_plan
from tests.conftest import TINY_BUDGET
from tests.rollout_fixtures import REPLY1

pytestmark = pytest.mark.slow
GREEDY = Sampling(n=1, max_tokens=40, temperature=0.0)


def _prompts(box_model, synth_data):
    hf = HFEngine(str(box_model), TINY_BUDGET)
    tok = Tokenizer(hf.tokenizer)
    record = next(read_prompts(synth_data))
    original = open_store(synth_data).get(record.images[0])
    view = render_view(original, None, TINY_BUDGET)
    crop = render_view(original.crop((100, 100, 400, 380)), None, TINY_BUDGET)
    turn1 = Prompt(tok.encode(first_prompt(MGPO, record.question, record.choices)), [view])
    two = (
        turn1.ids
        + tok.encode(REPLY1)
        + tok.encode(followup(MGPO, record.question, record.choices, True, False))
    )
    return hf, tok, [turn1, Prompt(two, [view, crop])]


def test_vllm_and_hf_agree_on_greedy_ids_and_logprobs_for_one_and_two_images(
    box_model, synth_data, vllm_engine
):
    hf, tok, prompts = _prompts(box_model, synth_data)
    sampling = Sampling(n=1, max_tokens=40, temperature=0.0, stop_ids=(tok.im_end,))
    expected = hf.generate(prompts, sampling)
    got = vllm_engine.generate(prompts, sampling)
    for want, have in zip(expected, got, strict=True):
        assert have[0].ids == want[0].ids
        assert len(set(want[0].ids)) > 5  # a real, varied reply, not a degenerate repeat
        assert max(abs(a - b) for a, b in zip(want[0].logprobs, have[0].logprobs, strict=True)) < 1e-4
        assert have[0].finish_reason == want[0].finish_reason


def test_both_engines_stop_at_the_closing_fence_and_keep_it(box_model, synth_data, vllm_engine):
    hf, tok, prompts = _prompts(box_model, synth_data)
    sampling = Sampling(n=1, max_tokens=60, temperature=0.0, stop=MGPO.stop, stop_ids=(tok.im_end,))
    for engine in (hf, vllm_engine):
        completion = engine.generate(prompts[:1], sampling)[0][0]
        assert tok.decode(completion.ids) == REPLY1 and completion.finish_reason == "stop"


def test_sampling_n_gives_n_completions_with_logprobs(vllm_engine, box_model, synth_data):
    _, tok, prompts = _prompts(box_model, synth_data)
    out = vllm_engine.generate(prompts, Sampling(n=3, max_tokens=8, temperature=1.0, seed=0))
    assert [len(o) for o in out] == [3, 3]
    assert all(len(c.ids) == len(c.logprobs) and all(lp <= 0 for lp in c.logprobs) for o in out for c in o)


def test_vllm_reloads_weights_in_place_and_then_matches_hf(
    vllm_engine, box_model, tiny_small, synth_data, tmp_path
):
    hf, tok, prompts = _prompts(box_model, synth_data)
    sampling = Sampling(n=1, max_tokens=12, temperature=0.0, stop_ids=(tok.im_end,))
    before = vllm_engine.generate(prompts, sampling)
    base = save_weights(load_policy(tiny_small), tmp_path / "base.safetensors")
    vllm_engine.load_weights(str(base), version=1)
    hf.load_weights(str(base), version=1)
    assert vllm_engine.version == 1
    after = vllm_engine.generate(prompts, sampling)
    reference = hf.generate(prompts, sampling)
    assert after[0][0].ids != before[0][0].ids  # outputs changed: the same images, fresh caches
    for want, have in zip(reference, after, strict=True):
        assert have[0].ids == want[0].ids
        assert max(abs(a - b) for a, b in zip(want[0].logprobs, have[0].logprobs, strict=True)) < 1e-4
    restored = save_weights(load_policy(box_model), tmp_path / "box.safetensors")
    vllm_engine.load_weights(str(restored), version=2)
    assert vllm_engine.generate(prompts, sampling)[0][0].ids == before[0][0].ids


class _Sender:
    """The learner's end of the broadcast, in a thread of the test process."""

    def __init__(self, receivers: int) -> None:
        self.store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        self.receivers, self.generation = receivers, 0

    def start(self, state: dict) -> tuple[list, list, threading.Thread]:
        self.generation += 1
        address = list(
            Address("127.0.0.1", self.store.port, self.receivers + 1, self.generation, timeout_s=60)
        )
        plan = plan_for(state, bucket_bytes=1 << 20)

        def run() -> None:
            send(state, plan, join(Address(*address), 0, self.store))

        thread = threading.Thread(target=run)
        thread.start()
        return address, wire_plan(plan), thread


def test_vllm_receives_a_broadcast_atomically_and_then_matches_hf(
    vllm_engine, box_model, tiny_small, synth_data
):
    hf, tok, prompts = _prompts(box_model, synth_data)
    sampling = Sampling(n=1, max_tokens=12, temperature=0.0, stop_ids=(tok.im_end,))
    before = vllm_engine.generate(prompts, sampling)
    sender = _Sender(receivers=2)
    state = policy_state(load_policy(tiny_small))
    address, plan, thread = sender.start(state)
    receivers = [threading.Thread(target=hf.receive_weights, args=(address, 2, plan, 7))]
    receivers[0].start()
    vllm_engine.receive_weights(address, 1, plan, version=7)
    thread.join()
    receivers[0].join()
    assert vllm_engine.version == 7 and hf.version == 7
    after = vllm_engine.generate(prompts, sampling)
    reference = hf.generate(prompts, sampling)
    assert after[0][0].ids != before[0][0].ids
    for want, have in zip(reference, after, strict=True):
        assert have[0].ids == want[0].ids
        assert max(abs(a - b) for a, b in zip(want[0].logprobs, have[0].logprobs, strict=True)) < 1e-4
    # the next generation (another membership) over the same store puts the trained weights back, streamed:
    # vLLM's loader takes each bucket as it lands
    sender.receivers = 1
    address, plan, thread = sender.start(policy_state(load_policy(box_model)))
    vllm_engine.receive_weights(address, 1, plan, version=8, stream=True)
    thread.join()
    assert vllm_engine.generate(prompts, sampling)[0][0].ids == before[0][0].ids


def test_a_broadcast_that_fails_midway_leaves_the_old_weights_whole(box_model, tiny_small, synth_data):
    hf, tok, prompts = _prompts(box_model, synth_data)
    sampling = Sampling(n=1, max_tokens=12, temperature=0.0, stop_ids=(tok.im_end,))
    before = hf.generate(prompts, sampling)
    state = policy_state(load_policy(tiny_small))
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    address = list(Address("127.0.0.1", store.port, 2, 1, timeout_s=5))
    plan = plan_for(state, bucket_bytes=64 << 10)  # many buckets; the sender stops after the first
    assert len(plan) > 2
    old_first = hf.model.state_dict()[plan[0].slots[0].name].clone()

    def partial() -> None:
        group = join(Address(*address), 0, store)  # the generation `address` holds when the thread starts
        send(state, plan[:1], group)

    thread = threading.Thread(target=partial)
    thread.start()
    with pytest.raises(RuntimeError):
        hf.receive_weights(address, 1, wire_plan(plan), version=1)
    thread.join()
    assert hf.version == 0 and hf.generate(prompts, sampling)[0][0].ids == before[0][0].ids

    # streamed, the same failure leaves the first bucket applied: the trade the option makes for memory
    address = list(Address("127.0.0.1", store.port, 2, 2, timeout_s=5))
    thread = threading.Thread(target=partial)
    thread.start()
    with pytest.raises(RuntimeError):
        hf.receive_weights(address, 1, wire_plan(plan), version=1, stream=True)
    thread.join()
    first = plan[0].slots[0].name
    assert not torch.equal(old_first, state[first])
    assert torch.equal(hf.model.state_dict()[first], state[first]) and hf.version == 0


def test_compat_module_is_registered_as_a_vllm_plugin_and_aliases_smart_resize():
    plugins = {e.name: e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert plugins.get("mgpo_qwen_vl_compat") == "actors.vllm_compat:install"
    assert not vllm_compat.torchvision_available()  # our machines: the shims are active
    vllm_compat.install()
    vllm_compat.install()  # idempotent
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as pil_smart_resize
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    assert smart_resize is pil_smart_resize


def test_hf_engine_refuses_weights_of_another_model(box_model, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"not.a.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        HFEngine(str(box_model), TINY_BUDGET).load_weights(str(path), 1)


def test_prompt_images_must_be_rendered_views():
    image = Image.new("RGB", (448, 420))
    assert render_view(image, None, TINY_BUDGET) is image
