import pytest
import torch

from learner.logprobs import group_batch, token_stats
from learner.step import mgpo_step, torch_optimizer_step
from mgpo.data.dataset import open_store
from mgpo.loss import LossConfig
from mgpo.models.tiny import load_policy, load_processor
from tests.learner.conftest import rewarded, rollout_groups

pytestmark = pytest.mark.slow


def _mean_logprob_per_sample(model, processor, group, store):
    batch = group_batch(processor, group, store)
    with torch.no_grad():
        lp = token_stats(model, batch.inputs, batch.loss_mask, with_entropy=False).logprobs
    counts = batch.loss_mask[:, 1:].sum(1).tolist()
    return [chunk.mean().item() for chunk in torch.split(lp, counts)]


def test_a_step_improves_the_surrogate_and_raises_the_rewarded_sample(box_model, synth_data):
    store = open_store(synth_data)
    # sample 0 right, the rest wrong -> advantages [1.5, -0.5, -0.5, -0.5]
    group = rewarded(rollout_groups(box_model, synth_data, [1], n=4, max_turn_tokens=24, seed=5), winner=0)[0]
    processor = load_processor(box_model)
    model = load_policy(box_model)
    before = _mean_logprob_per_sample(model, processor, group, store)
    # a small plain gradient step: first order, so the surrogate must improve (Adam's sign-like first step
    # moves every weight by ~lr and overshoots on a model this small)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    config = LossConfig(kl_coef=0.0, entropy_coef=0.0)
    stats = mgpo_step(
        model,
        None,
        [group],
        processor,
        store,
        config,
        lambda loss: loss.backward(),
        torch_optimizer_step(model, optimizer, 1.0),
    )
    after = _mean_logprob_per_sample(model, processor, group, store)
    assert stats.groups == 1 and stats.degenerate_groups == 0 and stats.tokens > 0
    assert stats.grad_norm > 0 and stats.is_weight == pytest.approx(1.0, abs=1e-3)  # on-policy: weight 1
    assert stats.clip_fraction == 0.0  # one update from the old policy: ratio 1
    tokens = group_batch(processor, group, store).loss_mask[:, 1:].sum(1).tolist()
    advantages = [1.5, -0.5, -0.5, -0.5]
    # the surrogate's first-order change: sum_i A_i * (change of sample i's summed logprob) > 0
    gain = sum(a * n * (x - y) for a, n, x, y in zip(advantages, tokens, after, before, strict=True))
    assert gain > 0
    assert after[0] > before[0]  # the rewarded sample became more likely


def test_a_step_of_only_degenerate_groups_changes_nothing(box_model, synth_data):
    store = open_store(synth_data)
    group = rollout_groups(box_model, synth_data, [2], n=2, max_turn_tokens=16, seed=1)[0]  # babble: all 0
    model = load_policy(box_model)
    before = [p.clone() for p in model.parameters()]
    calls = []
    stats = mgpo_step(
        model,
        None,
        [group],
        load_processor(box_model),
        store,
        LossConfig(),
        calls.append,
        lambda: calls.append("step") or 0.0,
    )
    assert stats.degenerate_groups == 1 and stats.tokens == 0 and calls == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
