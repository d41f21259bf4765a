import pytest
import torch

from actors.loop import Loop, RolloutSettings, Tokenizer
from learner.logprobs import flat, group_batch, per_token, token_stats
from mgpo.data.dataset import open_store, read_prompts
from mgpo.models.tiny import load_policy, load_processor
from mgpo.templates import GRPO, MGPO
from tests.conftest import TINY_BUDGET

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("template", "images"), [(GRPO, 1), (MGPO, 2)])
def test_learner_logprobs_equal_the_actors_in_fp32(template, images, vllm_engine, box_model, synth_data):
    # sampled (temperature 1) trajectories from the vLLM actor; the learner rebuilds inputs from the record
    store = open_store(synth_data)
    tok = Tokenizer(vllm_engine.llm.get_tokenizer())
    settings = RolloutSettings(template, TINY_BUDGET, n=3, max_turn_tokens=32, temperature=1.0)
    record = next(read_prompts(synth_data))
    group = Loop(vllm_engine, tok, store, settings).rollout([record], seed=3)[0]
    assert all(len(s.views) == images for s in group.samples)
    model = load_policy(box_model).eval()
    batch = group_batch(load_processor(box_model), group, store)
    with torch.no_grad():
        stats = token_stats(model, batch.inputs, batch.loss_mask)
    actor = flat(batch.logprobs, batch.loss_mask)
    assert len(actor) == sum(int(s.loss_mask.sum()) for s in group.samples) > 0
    assert (stats.logprobs - actor).abs().max().item() < 1e-4
    assert (stats.entropy >= 0).all()


def test_per_token_broadcasts_sample_values_to_their_tokens():
    mask = torch.tensor([[False, True, True], [False, False, True]])
    assert per_token([1.5, -2.0], mask).tolist() == [1.5, 1.5, -2.0]
