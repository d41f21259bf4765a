"""`mgpo plan`: the memory arithmetic, its verdicts on the shipped 7B configs, and the command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recipes.plan import GIB, activations, actor, lora_params, model_states, plan, render, shape_of
from runtime.config import load_config, parse_config
from services.cli import main

SHAPES = Path("configs/shapes/qwen2.5-vl-7b.json")


@pytest.fixture(scope="module")
def shape():
    return shape_of(SHAPES)


def test_the_7b_shape_has_the_published_parameter_count(shape):
    assert shape.params == 8_292_166_656  # Qwen2.5-VL-7B-Instruct: 8.29 B
    assert (shape.layers, shape.hidden, shape.kv_dim, shape.vocab) == (28, 3584, 512, 152064)


def test_model_states_follow_what_each_zero_stage_shards(shape):
    psi = shape.params / GIB
    config = parse_config({"model": {"dtype": "bf16"}, "learner": {"world_size": 4, "zero_stage": 2}})
    parts = {p.name: p.gib for p in model_states(shape, config)}
    assert parts["weights"] == pytest.approx(2 * psi)  # ZeRO-2 keeps whole 16-bit weights
    assert parts["gradients"] == pytest.approx(2 * psi / 4)
    assert parts["optimizer states"] == pytest.approx(16 * psi / 4)  # fp32 master + grads + Adam, sharded
    assert parts["reference model"] == pytest.approx(2 * psi)  # kl_coef 0.01 by default: a whole copy

    fp32 = parse_config(
        {"learner": {"zero_stage": 3, "world_size": 2, "offload_optimizer": True, "kl_coef": 0}}
    )
    parts = {p.name: p.gib for p in model_states(shape, fp32)}
    assert parts == pytest.approx({"weights": 4 * psi / 2, "gradients": 4 * psi / 2, "optimizer states": 0.0})


def test_checkpointing_and_micro_batches_shrink_the_activations(shape):
    def gib(**learner):
        parts = activations(shape, parse_config({"learner": learner}))
        return {p.name: p.gib for p in parts}

    whole, checkpointed = gib(), gib(gradient_checkpointing=True)
    assert checkpointed["activations"] < whole["activations"] / 10
    assert gib(micro_batch=1)["logits"] == pytest.approx(whole["logits"] / 8)  # rollout.n = 8 per pass before


def test_tensor_parallel_splits_an_actors_weights_and_kv_cache(shape):
    one = actor(shape, parse_config({"rollout": {"gpus_per_actor": 1}}), device_gib=80)
    two = actor(shape, parse_config({"rollout": {"gpus_per_actor": 2, "tensor_parallel": 2}}), device_gib=80)
    assert two.weights_gib == pytest.approx(one.weights_gib / 2)
    assert two.kv_per_sequence_gib == pytest.approx(one.kv_per_sequence_gib / 2)
    assert two.full_length_sequences > 2 * one.full_length_sequences


def test_the_shipped_7b_configs_fit_an_80_gib_gpu_and_one_zero1_rank_does_not():
    shipped = plan(load_config("configs/mgpo-qwen2.5-vl-7b.yaml"), SHAPES, device_gib=80)
    assert shipped.learner.fits and shipped.actor.fits and shipped.learner.total_gib < 72

    values = yaml.safe_load(Path("deploy/helm/values-paper.yaml").read_text())["runDefaults"]
    helm = plan(parse_config(values), SHAPES, device_gib=80)
    assert helm.learner.fits and helm.actor.fits

    one_rank = parse_config({"model": {"dtype": "bf16"}, "learner": {"zero_stage": 1}})
    verdict = plan(one_rank, SHAPES, device_gib=80)
    assert not verdict.learner.fits and verdict.learner.largest == "activations"
    text = render(verdict)
    assert "does NOT fit (largest: activations)" in text and "learner.gradient_checkpointing: true" in text


def test_the_command_names_missing_shapes_and_fails_a_plan_that_does_not_fit(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(tmp_path / "nowhere"), "dtype": "bf16"}}))
    assert main(["plan", "--config", str(config)]) == 2
    assert "pass --shapes CONFIG_JSON" in capsys.readouterr().err
    assert main(["plan", "--config", str(config), "--shapes", str(SHAPES)]) == 1  # one rank: too big
    assert "does NOT fit" in capsys.readouterr().out


def test_lora_trains_a_few_million_parameters_and_needs_no_reference_copy(shape):
    config = parse_config(
        {
            "model": {"dtype": "bf16"},
            "learner": {"lora": {"rank": 16, "dropout": 0}, "gradient_checkpointing": True, "micro_batch": 1},
        }
    )
    assert lora_params(shape, config) == 40_370_176  # r 16 on every projection of 28 layers: the known 40.4 M
    parts = {p.name: p.gib for p in model_states(shape, config)}
    assert "reference model" not in parts  # kl_coef 0.01, but the base with adapters off is the reference
    assert parts["optimizer states"] == pytest.approx(16 * 40_370_176 / GIB)
    assert plan(config, SHAPES, device_gib=80).learner.fits  # one GPU, no ZeRO sharding needed


def test_json_output_is_only_json_although_deepspeed_logs_on_import():
    # a fresh process: DeepSpeed's import-time accelerator line must not reach stdout
    command = [sys.executable, "-m", "services.cli", "plan", "--config", "configs/mgpo-qwen2.5-vl-7b.yaml"]
    out = subprocess.run(
        [*command, "--shapes", str(SHAPES), "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["params"] == 8_292_166_656
