from pathlib import Path

import pytest

from mgpo.templates import Mode
from runtime.config import ConfigError, RunConfig, SFTConfig, load_config, load_sft_config, parse_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_the_three_configs_ship():
    assert {p.name for p in CONFIGS} >= {"demo-cpu.yaml", "mgpo-qwen2.5-vl-7b.yaml", "grpo-baseline.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    assert isinstance(load_config(path), RunConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS[0].parent.glob("sft/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sft_config_loads_and_validates(path):
    assert isinstance(load_sft_config(path), SFTConfig)


def test_an_sft_config_reports_every_problem(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("steps: 0\nbox_cells: 1\n")
    with pytest.raises(ConfigError, match="2 problem") as err:
        load_sft_config(path)
    assert "steps" in str(err.value) and "box_cells" in str(err.value)
    path.write_text("model: {warmup_steps: 5}\n")
    with pytest.raises(ConfigError, match="the cold start replaces it"):
        load_sft_config(path)
    path.write_text("steps: 100\nlr_warmup_steps: 10\nlr_decay_steps: 91\n")
    with pytest.raises(ConfigError, match=r"\(10 \+ 91\) exceed steps \(100\)"):
        load_sft_config(path)


def test_shipped_configs_carry_the_settings_they_claim():
    paper = load_config(CONFIGS[0].parent / "mgpo-qwen2.5-vl-7b.yaml")
    assert (paper.rollout.mode, paper.rollout.n, paper.learner.lr, paper.learner.kl_coef) == (
        Mode.MGPO,
        8,
        1e-6,
        0.01,
    )
    assert (paper.rollout.min_pixels, paper.rollout.max_pixels) == (256 * 784, 1280 * 784)
    assert paper.model.dtype == "bf16" and paper.learner.max_staleness == 0
    baseline = load_config(CONFIGS[0].parent / "grpo-baseline.yaml")
    assert baseline.rollout.mode is Mode.GRPO and baseline.learner == paper.learner
    demo = load_config(CONFIGS[0].parent / "demo-cpu.yaml")
    assert demo.model.path == "tiny" and demo.learner.kl_coef == 0.0 and demo.run_dir == Path("runs/demo-cpu")


def test_every_problem_is_reported_at_once_with_its_field():
    raw = {"rollout": {"n": 1, "temperature": 0, "engine": "tgi"}, "learner": {"zero_stage": 4}, "bogus": 1}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "x.yaml")
    message = str(err.value)
    assert message.startswith("x.yaml: 5 problem(s)")
    for field in ("rollout.n", "rollout.temperature", "rollout.engine", "learner.zero_stage", "bogus"):
        assert field in message
    assert "(got 1)" in message


def test_cross_field_problems_say_how_to_fix_them():
    with pytest.raises(ConfigError, match="min_pixels .* must not exceed max_pixels"):
        parse_config({"rollout": {"min_pixels": 2000, "max_pixels": 1000}})
    with pytest.raises(ConfigError, match="raise max_model_len or lower max_turn_tokens"):
        parse_config(
            {"rollout": {"mode": "multiturn", "max_crops": 3, "max_turn_tokens": 2048, "max_model_len": 8192}}
        )
    with pytest.raises(ConfigError, match="raise max_staleness or lower sync_every"):
        parse_config({"learner": {"sync_every": 3, "max_staleness": 1}})
    assert parse_config({"learner": {"sync_every": 3, "max_staleness": 2}}).learner.max_staleness == 2
    with pytest.raises(ConfigError, match="box_hint is for the mgpo and grpo modes"):
        parse_config({"rollout": {"mode": "multiturn", "box_hint": True}})
    for knob in ({"invalid_crop": "end"}, {"direct_bonus": 0.2}):
        with pytest.raises(ConfigError, match="are for the multiturn mode"):
            parse_config({"rollout": {"mode": "mgpo", **knob}})
    multiturn = {"mode": "multiturn", "invalid_crop": "end", "direct_bonus": 0.2}
    assert parse_config({"rollout": multiturn}).rollout.direct_bonus == 0.2
    with pytest.raises(ConfigError, match="invalid_crop"):
        parse_config({"rollout": {"mode": "multiturn", "invalid_crop": "retry"}})
    with pytest.raises(ConfigError, match="warmup_steps is for the random tiny model"):
        parse_config({"model": {"path": "/models/qwen2.5-vl-7b", "warmup_steps": 10}})


def test_non_default_values_are_taken():
    config = parse_config(
        {
            "rollout": {"mode": "multiturn", "max_crops": 3, "engine": "hf"},
            "queue": {"redis_url": "redis://h:1/0"},
        }
    )
    assert (
        config.rollout.mode is Mode.MULTITURN
        and config.rollout.max_crops == 3
        and config.rollout.engine == "hf"
    )
    assert config.queue.redis_url == "redis://h:1/0"
    assert parse_config(None) == RunConfig()


def test_unreadable_files_give_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("rollout: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"learner": {"zero_stage": True}}, "learner.zero_stage: Value error, True is a boolean here"),
        ({"rollout": {"n": True}}, "rollout.n: Value error, True is a boolean here"),
        ({"learner": {"lr": float("inf")}}, "learner.lr: Input should be a finite number"),
        (
            {"learner": {"max_grad_norm": float("nan")}},
            "learner.max_grad_norm: Input should be a finite number",
        ),
        ({"rollout": {"actors": 10**9}}, "rollout.actors: Input should be less than or equal to 1024"),
        ({"learner": {"gpus": 1e9}}, "learner.gpus: Input should be less than or equal to 64"),
        (
            {"learner": {"world_size": 2, "zero_stage": 0}},
            "zero_stage 0 with world_size > 1: the ranks' gradients are reduced by ZeRO here",
        ),
        ({"learner": {"zero_stage": 4}}, "learner.zero_stage: Input should be 0, 1, 2 or 3"),
        (
            {"rollout": {"ray_resources": {"rollout": -1}}},
            "rollout.ray_resources.rollout: Input should be greater than or equal to 0",
        ),
        (
            {"rollout": {"max_pixels": 10**12}},
            "rollout.max_pixels: Input should be less than or equal to 67108864",
        ),
    ],
)
def test_absurd_values_are_refused_with_their_field(raw, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert needle in str(err.value)


def test_a_yaml_yes_is_not_taken_for_a_number_but_stays_a_boolean_where_one_is_wanted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  zero_stage: yes\nmetrics:\n  enabled: no\n")
    with pytest.raises(ConfigError, match="zero_stage: Value error, True is a boolean here"):
        load_config(path)
    path.write_text("metrics:\n  enabled: no\n")
    assert load_config(path).metrics.enabled is False


def test_a_cross_field_problem_is_listed_beside_field_problems_of_its_section():
    raw = {"rollout": {"n": 0, "min_pixels": 200_000, "max_pixels": 100_000}, "learner": {"lr": -1}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    text = str(err.value)
    assert text.startswith("config: 3 problem(s):")
    assert "rollout.n: Input should be greater than or equal to 2" in text
    assert "learner.lr: Input should be greater than 0" in text
    assert "min_pixels (200000) must not exceed max_pixels (100000)" in text  # hidden before by rollout.n


def test_the_length_check_counts_every_image_at_its_real_token_count():
    # 2 turns x 64 tokens fit 2048 easily, but the original and the crop are up to 1,280 tokens each
    with pytest.raises(ConfigError, match="2 images of up to 1280 visual tokens leave no room"):
        parse_config(
            {"rollout": {"max_turn_tokens": 64, "max_model_len": 2048, "max_pixels": 1280 * 28 * 28}}
        )
    assert (
        parse_config({"rollout": {"max_turn_tokens": 64, "max_model_len": 4096}}).rollout.max_model_len
        == 4096
    )
