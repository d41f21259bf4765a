import pytest
import torch

from learner.engine import enable_gradient_checkpointing
from learner.logprobs import flat, group_batch, split_rows, token_stats
from learner.step import UpdateConfig, mgpo_step, prepare_one, torch_optimizer_step, with_signal
from mgpo.data.dataset import open_store
from mgpo.loss import LossConfig
from mgpo.masks import turn_starts
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
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = LossConfig(kl_coef=0.0, entropy_coef=0.0)
    stats = mgpo_step(
        model,
        None,
        [group],
        processor,
        store,
        config,
        UpdateConfig(),
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
        UpdateConfig(),
        calls.append,
        lambda: calls.append("step") or 0.0,
    )
    assert stats.degenerate_groups == 1 and stats.tokens == 0 and calls == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _forwards(model) -> list:
    calls = []
    model.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _step(model, group, processor, store, update, lr=0.05):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return mgpo_step(
        model,
        None,
        [group],
        processor,
        store,
        LossConfig(kl_coef=0.0, entropy_coef=0.0),
        update,
        lambda loss: loss.backward(),
        torch_optimizer_step(model, optimizer, 100.0),
    )


def test_one_update_skips_the_old_logprob_pass_and_several_updates_make_the_clip_bind(box_model, synth_data):
    store = open_store(synth_data)
    group = rewarded(rollout_groups(box_model, synth_data, [1], n=4, max_turn_tokens=24, seed=5), winner=0)[0]
    processor = load_processor(box_model)

    once = load_policy(box_model)
    calls = _forwards(once)
    single = _step(once, group, processor, store, UpdateConfig(), lr=2.0)
    assert calls == [1]  # one forward with gradients; the "old" log-probs are its own, detached
    assert single.clip_fraction == 0.0  # the ratio is exactly 1 in the only update

    repeated = load_policy(box_model)
    calls = _forwards(repeated)
    several = _step(repeated, group, processor, store, UpdateConfig(ppo_epochs=4), lr=2.0)
    assert len(calls) == 1 + 4  # the old log-probs once, then one forward per update
    # after the first update the policy has moved (a large step): the ratio leaves [0.8, 1.2] and clips
    assert several.clip_fraction > 0.0


def test_the_learner_divides_the_logits_by_the_sampling_temperature(box_model, synth_data):
    store = open_store(synth_data)
    group = rollout_groups(box_model, synth_data, [1], n=2, max_turn_tokens=16, seed=3)[0]
    model = load_policy(box_model).eval()
    batch = group_batch(load_processor(box_model), group, store)
    with torch.no_grad():
        cold = token_stats(model, batch.inputs, batch.loss_mask, False, temperature=0.5).logprobs
        model.model.rope_deltas = None
        logits = model(**batch.inputs).logits[:, :-1][batch.loss_mask[:, 1:]]  # [N, V], full forward
        targets = batch.inputs["input_ids"][:, 1:][batch.loss_mask[:, 1:]]
    expected = torch.log_softmax(logits.float() / 0.5, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(cold, expected, atol=1e-5)
    plain = token_stats(model, batch.inputs, batch.loss_mask, False).logprobs
    assert not torch.allclose(cold, plain, atol=1e-3)  # the temperature changes them (T=1 was the old bug)


def test_minibatches_split_a_step_into_that_many_updates(box_model, synth_data):
    store = open_store(synth_data)
    groups = rewarded(
        rollout_groups(box_model, synth_data, [1, 2], n=3, max_turn_tokens=16, seed=2), winner=1
    )
    model = load_policy(box_model)
    steps = []
    stats = mgpo_step(
        model,
        None,
        groups,
        load_processor(box_model),
        store,
        LossConfig(kl_coef=0.0),
        UpdateConfig(ppo_epochs=2, minibatches=2),
        lambda loss: loss.backward(),
        lambda: steps.append(1) or 1.0,
    )
    assert len(steps) == 4 and stats.grad_norm == 1.0 and stats.groups == 2


def test_gradient_checkpointing_recomputes_the_layers_and_takes_the_same_step(box_model, synth_data):
    store, processor = open_store(synth_data), load_processor(box_model)
    groups = rewarded(rollout_groups(box_model, synth_data, [1], n=3, max_turn_tokens=16, seed=3), winner=0)
    results = {}
    for checkpointing in (False, True):
        model = load_policy(box_model)
        if checkpointing:
            enable_gradient_checkpointing(model)
        layer_calls = []
        # a pre-hook: the recomputation stops early, once it has what backward needs, before a forward hook
        model.model.language_model.layers[0].register_forward_pre_hook(
            lambda *_, calls=layer_calls: calls.append(1)
        )
        sgd = torch.optim.SGD(model.parameters(), lr=0.05)
        update = UpdateConfig(gradient_checkpointing=checkpointing)
        mgpo_step(
            model,
            None,
            groups,
            processor,
            store,
            LossConfig(kl_coef=0.0),
            update,
            lambda loss: loss.backward(),
            torch_optimizer_step(model, sgd, 1e3),
        )
        results[checkpointing] = (len(layer_calls), [p.detach().clone() for p in model.parameters()])
    assert results[True][0] == 2 * results[False][0]  # the forward again, in backward
    for a, b in zip(results[False][1], results[True][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not model.training  # back in eval mode after the step


def test_gradient_checkpointing_is_refused_on_a_model_with_dropout(box_model):
    model = load_policy(box_model)
    model.config.get_text_config().attention_dropout = 0.1
    with pytest.raises(ValueError, match="gradient_checkpointing needs a model without dropout"):
        enable_gradient_checkpointing(model)


def test_micro_batches_take_the_same_step_one_sample_per_pass(box_model, synth_data):
    store, processor = open_store(synth_data), load_processor(box_model)
    groups = rewarded(
        rollout_groups(box_model, synth_data, [1, 2], n=3, max_turn_tokens=16, seed=4), winner=2
    )
    batch = group_batch(processor, groups[0], store)
    model = load_policy(box_model)
    with torch.no_grad():
        whole = token_stats(model, batch.inputs, batch.loss_mask).logprobs
        parts = [token_stats(model, b.inputs, b.loss_mask).logprobs for b, _ in split_rows(batch, 2)]
    counts = batch.loss_mask[:, 1:].sum(1).tolist()
    assert [len(p) for p in parts] == [counts[0] + counts[1], counts[2]]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-5)  # same tokens, same order, trimmed padding

    results = {}
    for micro in (0, 1):
        model = load_policy(box_model)
        calls = _forwards(model)
        sgd = torch.optim.SGD(model.parameters(), lr=0.05)
        stats = mgpo_step(
            model,
            None,
            groups,
            processor,
            store,
            LossConfig(kl_coef=0.0),
            UpdateConfig(micro_batch=micro),
            lambda loss: loss.backward(),
            torch_optimizer_step(model, sgd, 1e3),
        )
        results[micro] = (len(calls), stats, [p.detach().clone() for p in model.parameters()])
    assert results[1][0] == 3 * results[0][0]  # one pass per sample instead of one per group
    assert results[1][1].loss == pytest.approx(results[0][1].loss, abs=1e-6)
    assert results[1][1].grad_norm == pytest.approx(results[0][1].grad_norm, rel=1e-4)
    for a, b in zip(results[0][2], results[1][2], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_decision_weight_multiplies_each_turns_first_token_and_nothing_else(box_model, synth_data):
    store = open_store(synth_data)
    # two turns (MGPO): sample 0 right, the rest wrong -> advantages [1.5, -0.5, -0.5, -0.5]
    group = rewarded(rollout_groups(box_model, synth_data, [1], n=4, max_turn_tokens=24, seed=5), winner=0)[0]
    processor = load_processor(box_model)
    (signal,), _ = with_signal([group])
    plain = prepare_one(signal, processor, store)
    weighted = prepare_one(signal, processor, store, decision_weight=5.0)
    starts = flat(turn_starts(plain.batch.loss_mask), plain.batch.loss_mask)
    assert int(starts.sum()) == 8  # each of the 4 samples' two turns
    assert torch.equal(weighted.advantages[starts], 5.0 * plain.advantages[starts])
    assert torch.equal(weighted.advantages[~starts], plain.advantages[~starts])
