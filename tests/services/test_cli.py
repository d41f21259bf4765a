import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgpo.data.dataset import read_prompts
from services.cli import main

MGPO = str(Path(sys.executable).with_name("mgpo"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MGPO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_help_lists_the_subcommands():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("model", "data", "demo", "look"):
        assert command in result.stdout
    assert "--tokenizer" in _run("model", "tiny", "--help").stdout
    assert "--tag-size" in _run("data", "synth", "--help").stdout


def test_data_synth_then_check_round_trip(tmp_path):
    result = _run(
        "data",
        "synth",
        "--out",
        str(tmp_path / "d"),
        "--n",
        "3",
        "--seed",
        "5",
        "--min-side",
        "1536",
        "--max-side",
        "1600",
    )
    assert result.returncode == 0, result.stderr
    assert "3 synthetic choice samples" in result.stdout
    check = _run("data", "check", "--format", "synthetic", str(tmp_path / "d"))
    summary = json.loads(check.stdout)
    assert check.returncode == 0 and summary["count"] == 3 and summary["ok"]


def test_data_check_on_a_folder_of_the_wrong_layout_exits_2_with_json(tmp_path):
    check = _run("data", "check", "--format", "fsc147", str(tmp_path))
    assert check.returncode == 2
    assert "not an FSC-147 folder" in json.loads(check.stdout)["error"]


def test_bad_knobs_give_a_clear_error_and_exit_2(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "1", "--options", "9"]) == 2
    assert "options must be 2..5" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path),
                "--n",
                "1",
                "--task",
                "grounding",
                "--grounding-sides",
                "512",
            ]
        )
        == 2
    )
    assert "grounding_sides is MIN,MAX with 256 <= MIN <= MAX <= 8192, got (512,)" in capsys.readouterr().err


@pytest.mark.slow
def test_model_tiny_writes_a_loadable_checkpoint(tmp_path):
    result = _run("model", "tiny", "--out", str(tmp_path / "m"), "--size", "xs")
    assert result.returncode == 0, result.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }


@pytest.mark.slow
def test_look_writes_the_input_box_and_crop_images(tmp_path):
    result = _run("look", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("input.png", "input_with_box.png", "crop.png", "original.jpg"):
        assert (tmp_path / name).stat().st_size > 0
        assert str(tmp_path / name) in result.stdout.replace("\n", "")
    assert len(list(read_prompts(tmp_path / "data"))) == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("serve", "--port", "70000"), "argument --port: 70000 is not a TCP port (1-65535)"),
        (
            ("rollout", "--model", "/nowhere", "--data", "/x", "--out", "/tmp/o.jsonl", "--engine", "hf"),
            "argument --model: /nowhere is not a model folder (no config.json there)",
        ),
        (("eval", "--model", "/nowhere", "--data", "/x"), "argument --model: /nowhere is not a model folder"),
    ],
)
def test_a_user_error_is_one_clear_line_and_exit_code_2(args, message):
    result = _run(*args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and "Repo id" not in result.stderr


def test_data_check_on_a_file_of_another_schema_says_so_without_a_traceback(tmp_path):
    (tmp_path / "annotation_FSC147_384.json").write_text('[{"a": 1}, {"b": 2}]')
    result = _run("data", "check", "--format", "fsc147", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"].endswith(
        "expected a JSON object mapping image names to annotations, got a list"
    )


def test_openmp_waiters_sleep_unless_the_user_chose_otherwise(monkeypatch):
    from services.cli import _passive_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _passive_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _passive_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_an_offline_vllm_engine_runs_in_the_commands_own_process_on_a_cpu(monkeypatch):
    from argparse import Namespace

    from services.cli import _offline_engine

    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    assert _offline_engine(Namespace(engine="hf")) == "hf"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # the HF engine leaves vLLM's settings alone
    assert _offline_engine(Namespace(engine="vllm")) == "vllm"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # this box has no GPU
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    _offline_engine(Namespace(engine="vllm"))
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"  # the user's choice wins
