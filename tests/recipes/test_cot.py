"""The multi-image grounding cold start end to end on the tiny model: synthetic grounding records -> `mgpo
data cot` -> LoRA SFT on the replies -> `mgpo merge` -> `mgpo eval --bench synthetic` on the merged model."""

import json

import pytest

from mgpo.data.cot import read_replies
from mgpo.data.dataset import read_prompts
from services.cli import main


@pytest.mark.slow
def test_cot_data_lora_sft_merge_and_eval(tmp_path, capsys):
    data, sft = tmp_path / "data", tmp_path / "sft"
    assert main(["data", "synth", "--out", str(data), "--n", "5", "--seed", "3", "--task", "grounding"]) == 0
    assert main(["data", "cot", "--data", str(data), "--out", str(sft)]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["kept"] == 5 and counts["kept_share"] == 1.0
    replies = read_replies(sft)
    assert len(replies) == 5 and all(r.startswith("<think>") for r in replies.values())
    assert {r.id for r in read_prompts(sft)} == set(replies)

    config = tmp_path / "sft.yaml"
    config.write_text(
        f"name: cot\noutput_dir: {tmp_path / 'runs'}\n"
        "model: {path: tiny, tiny_size: xs, tiny_tokenizer: small}\n"
        f"data: {{path: {sft}, eval_n: 1}}\nsteps: 2\nbatch: 2\neval_every: 2\ncheckpoint_every: 2\n"
        "lora: {rank: 4}\n"
    )
    assert main(["sft", "--config", str(config)]) == 0
    summary = json.loads((tmp_path / "runs" / "cot" / "summary.json").read_text())
    assert summary["steps"] == 2 and 0.0 <= summary["mig_accuracy"] <= 1.0
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(tmp_path / "runs" / "cot" / "adapter"), "--out", str(merged)]) == 0
    out = tmp_path / "bench.json"
    assert main(["eval", "--bench", "synthetic", str(data), "--model", str(merged), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["mode"] == "single" and result["results"]["synthetic"]["samples"] == 5
    assert "mean_iou,none" in result["results"]["synthetic"]


def test_sft_refuses_a_folder_made_for_another_pixel_budget(tmp_path):
    from learner.sft import cot_examples
    from mgpo.resize import PixelBudget
    from runtime.config import SFTConfig

    data, sft = tmp_path / "data", tmp_path / "sft"
    assert main(["data", "synth", "--out", str(data), "--n", "2", "--seed", "3", "--task", "grounding"]) == 0
    assert main(["data", "cot", "--data", str(data), "--out", str(sft), "--max-pixels", "250000"]) == 0
    config = SFTConfig.model_validate({"data": {"path": str(sft), "eval_n": 1}})
    with pytest.raises(ValueError, match="its boxes are in those inputs' pixels"):
        cot_examples(config, PixelBudget(config.min_pixels, config.max_pixels))
