"""LoRA adapters (peft) on the tiny Qwen2.5-VL: what trains, SFT with them and resume, and the merge."""

import json

import pytest
import torch

from learner.lora import add_lora, load_adapter, merge, target_pattern
from learner.sft import run_sft
from mgpo.models.tiny import build_tiny, load_policy
from runtime.config import LoraSection, SFTConfig
from services.cli import main
from tests.conftest import TINY_BUDGET


def test_the_frozen_vision_tower_gets_no_adapter():
    assert target_pattern(LoraSection(target_modules=("q_proj",))) == r".*\.language_model\..*\.(q_proj)"
    assert (
        target_pattern(LoraSection(freeze_vision=False, target_modules=("qkv", "proj"))) == r".*\.(qkv|proj)"
    )
    with pytest.raises(ValueError, match="identifiers"):
        LoraSection(target_modules=("q_proj", ".*"))


def test_only_the_adapters_train(tiny_small):
    model = add_lora(load_policy(tiny_small), LoraSection(rank=4))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".language_model." in n for n in trained)
    assert any("mlp.gate_proj" in n for n in trained) and not any(".visual." in n for n in trained)
    with pytest.raises(ValueError, match="match no layer"):
        add_lora(load_policy(tiny_small), LoraSection(target_modules=("nothing_here",)))


def test_modules_to_save_train_in_full_beside_the_adapters(tiny_small):
    model = add_lora(
        load_policy(tiny_small), LoraSection(rank=4, modules_to_save=("embed_tokens", "lm_head"))
    )
    full = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert len(full) == 2 and all("modules_to_save" in n for n in full)
    assert any("lm_head" in n for n in full) and any("embed_tokens" in n for n in full)


def _sft(tmp_path, steps):
    return SFTConfig.model_validate(
        {
            "output_dir": str(tmp_path),
            "model": {"path": "tiny", "tiny_size": "xs", "tiny_tokenizer": "small"},
            "data": {"train_n": 2, "eval_n": 1, "min_side": 512, "max_side": 512, "clutter": 0},
            "steps": steps,
            "batch": 2,
            "lr": 1e-2,
            "eval_every": steps,
            "checkpoint_every": 2,
            "lora": {"rank": 4, "alpha": 8, "modules_to_save": ["lm_head"]},
        }
    )


@pytest.mark.slow
def test_lora_sft_resumes_writes_its_adapter_and_a_merged_model_that_merge_reproduces(tmp_path):
    config = _sft(tmp_path, 2)
    run_sft(config)
    base = config.run_dir / "model-init"
    adapter, merged = config.run_dir / "adapter", config.run_dir / "model"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["modules_to_save"] == ["lm_head"]
    # resumed from the step-2 adapter checkpoint, two more steps
    summary = run_sft(config.model_copy(update={"steps": 4, "eval_every": 4}), resume=True)
    assert summary["steps"] == 4
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        wrapped = load_adapter(base, adapter, trainable=False)(input_ids=ids).logits
        assert not torch.allclose(wrapped, load_policy(base)(input_ids=ids).logits)  # the adapter moved it
        assert torch.allclose(load_policy(merged)(input_ids=ids).logits, wrapped, atol=1e-4)
        assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "merged")]) == 0
        assert torch.allclose(load_policy(tmp_path / "merged")(input_ids=ids).logits, wrapped, atol=1e-4)
    assert (tmp_path / "merged" / "tokenizer.json").exists()


def test_merge_refuses_a_folder_that_is_no_adapter_and_an_adapter_that_does_not_fit(tmp_path, tiny_small):
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        merge(tiny_small, tmp_path / "out")
    adapter = tmp_path / "adapter"
    add_lora(load_policy(tiny_small), LoraSection(rank=4)).save_pretrained(adapter)
    wider = build_tiny(tmp_path / "wider", tokenizer="small", size="s", seed=0, budget=TINY_BUDGET)
    with pytest.raises(ValueError, match="does not fit the model"):
        merge(adapter, tmp_path / "out", base=str(wider))
