"""The control plane's HTTP API against a real Redis server: auth, run commands, data, trajectories, metrics.

Runs here are registered in Redis directly (no driver process), except where a real driver is the point."""

import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mgpo.boxes import Box
from mgpo.crop import View
from mgpo.data.dataset import read_prompts, write_synthetic
from mgpo.records import PromptRecord, TaskKind, TrajectoryGroup, TrajectorySample
from runtime.config import RunConfig, ServeConfig
from runtime.metrics import LearnerMetrics, serve_metrics
from runtime.queue import Queue
from runtime.run_state import RunState
from runtime.trajectories import group_entry, push_recent
from services.control import create_app
from services.runs import Runs

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data"), n=2, seed=0, progress=False)


@pytest.fixture
def client(redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MGPO_API_TOKEN", TOKEN)
    monkeypatch.delenv("MGPO_API_TOKEN_FILE", raising=False)
    redis.Redis.from_url(redis_server.url).flushdb()
    settings = ServeConfig(
        state_dir=str(tmp_path / "state"),
        max_upload_mb=1,
        dataset_roots=(str(tmp_path),),
        model_roots=(str(tmp_path),),
    )
    with TestClient(create_app(settings, redis_server.url)) as c:
        c.redis = redis.Redis.from_url(redis_server.url)
        c.tmp = tmp_path
        yield c


def _register(c: TestClient, dataset: Path, name: str = "r1", status: str = "running") -> RunConfig:
    """A run as its driver leaves it in Redis (the driver itself is not needed to test the API)."""
    config = RunConfig(name=name, output_dir=str(c.tmp / "state"), data={"path": str(dataset)})
    Runs(c.redis).register(name, config.model_dump(mode="json"), str(config.run_dir))
    Runs(c.redis).set(name, status=status)
    RunState(c.redis, name).set(heartbeat=int(time.time()), desired_actors=1, version=3)
    Queue(c.redis, name, "test").ensure_groups()
    return config


def _png(size=(64, 48), color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


MUTATIONS = [
    ("post", "/runs", {"config": {"rollout": {"n": 1}}}),  # invalid: no driver starts
    ("post", "/runs/r1/pause", None),
    ("post", "/runs/r1/resume", None),
    ("post", "/runs/r1/stop", None),
    ("post", "/runs/r1/checkpoint", None),
    ("put", "/runs/r1/actors", {"actors": 2}),
    ("post", "/runs/r1/prompts", {"prompts": []}),
    ("post", "/runs/r1/datasets", {"path": "{tmp}/nowhere"}),
]
READS = ["/runs", "/runs/r1", "/runs/r1/trajectories", "/metrics", "/metrics/targets"]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_every_mutation_needs_the_token(client, dataset, method, path, body, monkeypatch):
    _register(client, dataset)
    call = getattr(client, method)
    if body and "path" in body:
        body = {"path": body["path"].format(tmp=client.tmp)}
    kwargs = {"json": body} if body is not None else {}
    missing = call(path, **kwargs)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = call(path, headers={"Authorization": "Bearer nope"}, **kwargs)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
    assert call(path, headers=AUTH, **kwargs).status_code not in (401, 403, 500)
    monkeypatch.delenv("MGPO_API_TOKEN")  # no token configured: refuse rather than run open
    refused = call(path, headers=AUTH, **kwargs)
    assert refused.status_code == 403 and "no API token is configured" in refused.json()["detail"]


def test_images_upload_needs_the_token(client, dataset):
    _register(client, dataset)
    files = {"files": ("a.png", _png(), "image/png")}
    assert client.post("/runs/r1/images", files=files).status_code == 401
    assert client.post("/runs/r1/images", files=files, headers=AUTH).status_code == 201


@pytest.mark.parametrize("path", READS)
def test_reads_are_open_by_default(client, dataset, path):
    _register(client, dataset)
    assert client.get(path).status_code == 200


def test_reads_need_the_token_with_auth_reads(redis_server, tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("MGPO_API_TOKEN", TOKEN)
    settings = ServeConfig(state_dir=str(tmp_path), auth_reads=True)
    with TestClient(create_app(settings, redis_server.url)) as c:
        assert c.get("/runs").status_code == 401
        assert c.get("/runs", headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes never need it


def test_the_token_can_come_from_a_mounted_file(client, dataset, monkeypatch, tmp_path):
    _register(client, dataset)
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.delenv("MGPO_API_TOKEN")
    monkeypatch.setenv("MGPO_API_TOKEN_FILE", str(secret))
    assert client.post("/runs/r1/pause", headers={"Authorization": "Bearer from-file"}).status_code == 202
    assert client.post("/runs/r1/pause", headers=AUTH).status_code == 401


def test_run_commands_set_the_run_state_the_driver_acts_on(client, dataset):
    _register(client, dataset)
    state = RunState(client.redis, "r1")
    assert client.post("/runs/r1/pause", headers=AUTH).status_code == 202
    assert state.read().paused == 1
    assert client.get("/runs/r1").json()["paused"] is True
    assert client.post("/runs/r1/resume", headers=AUTH).status_code == 202
    assert state.read().paused == 0
    assert client.post("/runs/r1/checkpoint", headers=AUTH).status_code == 202
    assert state.read().checkpoint_requested == 1
    scaled = client.put("/runs/r1/actors", json={"actors": 3}, headers=AUTH)
    assert scaled.status_code == 200 and scaled.json()["actors"]["desired"] == 3
    assert state.read().desired_actors == 3
    assert client.post("/runs/r1/stop", headers=AUTH).status_code == 202
    assert state.read().stop == 1
    assert client.get("/runs/r1").json()["status"] == "stopping"


def test_commands_on_a_finished_or_unknown_run_are_refused(client, dataset):
    _register(client, dataset, status="finished")
    assert client.post("/runs/r1/pause", headers=AUTH).status_code == 409
    assert client.put("/runs/r1/actors", json={"actors": 1}, headers=AUTH).status_code == 409
    missing = client.post("/runs/nope/stop", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["detail"] == "no run named 'nope'"
    assert client.get("/runs/..%2Fetc").status_code == 404


def test_a_run_without_heartbeat_is_reported_lost(client, dataset):
    _register(client, dataset)
    RunState(client.redis, "r1").set(heartbeat=int(time.time()) - 3600)
    assert client.get("/runs/r1").json()["status"] == "lost"


def test_a_driver_that_never_beats_its_heart_does_not_stay_created_forever(client, dataset):
    _register(client, dataset, status="created")
    RunState(client.redis, "r1").set(heartbeat=0)
    Runs(client.redis).set("r1", launched=time.time() - 60)
    assert client.get("/runs/r1").json()["status"] == "created"  # still within its start-up time
    Runs(client.redis).set("r1", launched=time.time() - 3600)
    assert client.get("/runs/r1").json()["status"] == "lost"
    assert client.post("/runs/r1/stop", headers=AUTH).status_code == 409  # ended: commands are refused


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"config": {"rollout": {"n": 1}}}, "rollout.n"),
        ({"config": {"learner": {"lr": "fast"}}}, "learner.lr"),
        ({"config": {"name": "bad name!"}}, "name"),
        ({"config": {"model": {"unknown": 1}}}, "model.unknown"),
        ({"config": {"queue": 3}}, "queue"),
        ({"conf": {}}, "conf"),
    ],
)
def test_an_invalid_run_config_is_422_with_the_field(client, body, needle):
    response = client.post("/runs", json=body, headers=AUTH)
    assert response.status_code == 422
    assert needle in json.dumps(response.json()["detail"])


def test_bad_bodies_are_4xx_never_500(client, dataset):
    _register(client, dataset)
    h = AUTH
    assert (
        client.post(
            "/runs", content=b"{not json", headers={**h, "content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.put("/runs/r1/actors", json={"actors": -1}, headers=h).status_code == 422
    assert client.put("/runs/r1/actors", json={"actors": "two"}, headers=h).status_code == 422
    big = client.post("/runs", content=b"x" * (2 << 20), headers={**h, "content-type": "application/json"})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    corrupt = client.post(
        "/runs/r1/images", files={"files": ("a.png", b"\x89PNG broken", "image/png")}, headers=h
    )
    assert corrupt.status_code == 422 and "corrupt" in corrupt.json()["detail"]
    prompt = {"question": "q?", "images": ["0" * 64], "answer": "A", "choices": ["x", "y"]}
    unknown = client.post("/runs/r1/prompts", json={"prompts": [prompt]}, headers=h)
    assert unknown.status_code == 422 and "not in the run's store" in unknown.json()["detail"]
    wrong_letter = client.post("/runs/r1/prompts", json={"prompts": [{**prompt, "answer": "C"}]}, headers=h)
    assert wrong_letter.status_code == 422 and "answer among" in json.dumps(wrong_letter.json())
    assert (
        client.post(
            "/runs/r1/prompts", json={"prompts": [{**prompt, "images": ["../x"]}]}, headers=h
        ).status_code
        == 422
    )
    outside = client.post("/runs/r1/datasets", json={"path": "/etc"}, headers=h)
    assert outside.status_code == 403 and "outside the allowed" in outside.json()["detail"]
    empty = client.tmp / "empty"
    empty.mkdir()
    assert client.post("/runs/r1/datasets", json={"path": str(empty)}, headers=h).status_code == 422
    assert client.get("/runs/r1/trajectories?limit=0").status_code == 422
    assert client.get("/runs/r1/images/xyz").status_code == 422
    assert client.get(f"/runs/r1/images/{'a' * 64}").status_code == 404


def test_uploaded_images_and_prompts_reach_the_prompt_stream(client, dataset):
    _register(client, dataset)
    state = RunState(client.redis, "r1")
    fed = state.read().fed
    uploaded = client.post("/runs/r1/images", files=[("files", ("a.png", _png(), "image/png"))], headers=AUTH)
    assert uploaded.status_code == 201
    (digest,) = uploaded.json()["images"]
    prompt = {
        "id": "mine",
        "question": "What colour?",
        "images": [digest],
        "answer": "B",
        "choices": ["blue", "red"],
    }
    response = client.post("/runs/r1/prompts", json={"prompts": [prompt]}, headers=AUTH)
    assert response.status_code == 202 and response.json()["enqueued"] == 1
    (message_id, record), *_ = Queue(client.redis, "r1", "reader").read_prompts(10, block_ms=10)
    assert (record.id, record.images, record.answer, record.source) == ("mine", (digest,), "B", "api")
    assert state.read().enqueued == 1 and state.read().fed == fed  # the feeder's position is untouched


def test_a_dataset_folder_is_enqueued_with_its_images(client, dataset, tmp_path):
    config = _register(client, tmp_path / "run-data")  # the run's own store starts empty
    other = write_synthetic(tmp_path / "more", n=3, seed=5, progress=False)
    response = client.post("/runs/r1/datasets", json={"path": str(other)}, headers=AUTH)
    assert response.status_code == 202 and response.json()["enqueued"] == 3
    store = config.data_dir / "images"
    for record in read_prompts(other):
        assert all((store / h[:2] / h).exists() for h in record.images)
    assert client.redis.xlen("mgpo:r1:prompts") == 3


def _group(image: str, size: tuple[int, int]) -> TrajectoryGroup:
    def sample(reward: float, valid: bool, region: Box | None) -> TrajectorySample:
        views = (View(image), View(image, region)) if region else (View(image),)
        return TrajectorySample(
            ids=np.zeros(4, np.int32),
            loss_mask=np.ones(4, bool),
            logprobs=np.zeros(4, np.float32),
            views=views,
            reward=reward,
            valid_grounding=valid,
            turns=2 if region else 1,
            finish_reason="stop",
            text=("<box>...</box>", "B"),
        )

    return TrajectoryGroup(
        id="1-0/0",
        prompt_id="p1",
        policy_version=7,
        samples=(sample(1.0, True, Box(8, 4, 40, 36)), sample(0.0, False, None)),
        min_pixels=1,
        max_pixels=2,
        actor="r1-actor-0",
    )


def test_trajectories_are_listed_newest_first_and_filtered(client, dataset):
    config = _register(client, dataset)
    record = next(read_prompts(dataset))
    entry = group_entry(record, _group(record.images[0], (64, 48)), lambda h: (640, 480))
    push_recent(client.redis, "r1", [entry])
    items = client.get("/runs/r1/trajectories").json()
    assert [(i["reward"], i["valid_grounding"]) for i in items] == [(1.0, True), (0.0, False)]
    assert items[0]["crops"] == [{"image": record.images[0], "region": [8.0, 4.0, 40.0, 36.0]}]
    assert items[0]["question"] == record.question and items[0]["policy_version"] == 7
    assert [i["reward"] for i in client.get("/runs/r1/trajectories?valid=false").json()] == [0.0]
    assert [i["reward"] for i in client.get("/runs/r1/trajectories?min_reward=0.5").json()] == [1.0]
    assert client.get("/runs/r1/trajectories?limit=1").json()[0]["sample"] == 0
    del config


def _push_grounding(client: TestClient, dataset: Path) -> None:
    """A multi-image grounding group (two images of the dataset) whose answer named the wrong image."""
    (first, second) = [next(read_prompts(dataset)).images[0], list(read_prompts(dataset))[1].images[0]]
    record = PromptRecord(
        "g1", TaskKind.MULTI_IMAGE_GROUNDING, "where?", (first, second), "2", (), Box(0.1, 0.2, 0.3, 0.4)
    )
    sample = dataclasses.replace(
        _group(first, (64, 48)).samples[1],
        answer_iou=0.0,
        right_image=False,
        answer_image=1,
        answer_box=Box(0.5, 0.5, 0.75, 1.0),
    )
    group = dataclasses.replace(_group(first, (64, 48)), samples=(sample,))
    push_recent(client.redis, "r1", [group_entry(record, group, lambda h: (640, 480))])


def test_a_grounding_trajectory_carries_the_answer_image_and_box_for_the_viewer(client, dataset):
    _register(client, dataset)
    _push_grounding(client, dataset)
    (item,) = client.get("/runs/r1/trajectories").json()
    assert item["kind"] == "multi_image_grounding" and item["answer"] == "2"
    assert item["target_box"] == [0.1, 0.2, 0.3, 0.4] and len(item["images"]) == 2
    assert (item["answer_image"], item["answer_box"], item["answer_iou"]) == (1, [0.5, 0.5, 0.75, 1.0], 0.0)


def test_the_viewer_draws_every_image_of_a_grounding_prompt_with_both_boxes_in_chromium(client, dataset):
    """The page in a real headless Chromium, its requests answered by this app (real Redis, no server)."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (make test installs the Debian package)")
    _register(client, dataset)
    _push_grounding(client, dataset)

    def answer(route):
        response = client.get(route.request.url.removeprefix("http://mgpo.test"))
        route.fulfill(status=response.status_code, headers=dict(response.headers), body=response.content)

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.route("http://mgpo.test/**", answer)
        page.goto("http://mgpo.test/viewer?run=r1")
        page.wait_for_selector("article.traj.grounding figure")
        figures = page.locator("article.traj.grounding figure")
        assert figures.count() == 2
        # the answer's box on image 1 (the one it named), the true box on image 2 (the target)
        assert figures.nth(0).locator("rect.box-pred").count() == 1
        assert figures.nth(0).locator("rect.box-true").count() == 0
        assert figures.nth(1).locator("rect.box-true").count() == 1
        assert figures.nth(1).locator("rect.box-pred").count() == 0
        true_box = figures.nth(1).locator("rect.box-true")
        assert [true_box.get_attribute(a) for a in ("x", "y")] == ["64", "96"]  # 0.1 x 640, 0.2 x 480
        assert "IoU 0.00, named image 1" in page.locator("article.traj").inner_text()
        browser.close()


def test_the_image_endpoint_crops_a_region_of_the_original(client, dataset):
    _register(client, dataset)
    digest = next(read_prompts(dataset)).images[0]
    crop = client.get(f"/runs/r1/images/{digest}?region=10,20,110,70&max_side=4096")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(crop.content)).size == (100, 50)
    whole = Image.open(io.BytesIO(client.get(f"/runs/r1/images/{digest}?max_side=256").content))
    assert max(whole.size) == 256
    bad = client.get(f"/runs/r1/images/{digest}?region=50,50,10,10")
    assert bad.status_code == 422 and "x1 < x2" in bad.json()["detail"]
    assert client.get(f"/runs/r1/images/{digest}?region=a,b").status_code == 422


def _families(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_run_gauges_and_discovery_lists_process_endpoints(client, dataset):
    _register(client, dataset)
    RunState(client.redis, "r1").set(paused=1)
    Runs(client.redis).set_actors("r1", {"r1-actor-0": "running", "r1-actor-1": "joining"})
    client.post("/runs/r1/images", files={"files": ("a.png", _png(), "image/png")}, headers=AUTH)
    (digest,) = client.post(
        "/runs/r1/images", files={"files": ("a.png", _png(), "image/png")}, headers=AUTH
    ).json()["images"]
    prompt = {"question": "q", "images": [digest], "answer": "A", "choices": ["x", "y"]}
    client.post("/runs/r1/prompts", json={"prompts": [prompt, prompt]}, headers=AUTH)

    values = _families(client.get("/metrics").text)
    assert values[("mgpo_run_info", (("run", "r1"), ("status", "running")))] == 1.0
    assert values[("mgpo_queue_depth", (("run", "r1"), ("stream", "prompts")))] == 2.0
    assert values[("mgpo_actors", (("run", "r1"), ("state", "running")))] == 1.0
    assert values[("mgpo_actors", (("run", "r1"), ("state", "joining")))] == 1.0
    assert values[("mgpo_actors", (("run", "r1"), ("state", "desired")))] == 1.0
    assert values[("mgpo_run_paused", (("run", "r1"),))] == 1.0
    assert values[("mgpo_run_policy_version", (("run", "r1"),))] == 3.0

    learner = LearnerMetrics("r1", CollectorRegistry())
    target = serve_metrics(learner.registry, client.redis, "r1", "learner", "learner")
    learner.observe_sync({"sync_seconds": 0.25, "sync_bytes": 1000.0})
    (group,) = client.get("/metrics/targets").json()
    assert group == {"targets": [target], "labels": {"run": "r1", "role": "learner", "member": "learner"}}
    import urllib.request

    scraped = _families(urllib.request.urlopen(f"http://{target}/metrics", timeout=5).read().decode())
    assert scraped[("mgpo_weight_sync_bytes_total", (("run", "r1"),))] == 1000.0
    assert scraped[("mgpo_weight_sync_seconds_count", (("run", "r1"),))] == 1.0


def test_a_driver_that_fails_at_start_is_reported_failed_with_its_error(client, tmp_path):
    config = {"name": "doomed", "model": {"path": str(tmp_path / "no-model")}}
    created = client.post("/runs", json={"config": config}, headers=AUTH)
    assert created.status_code == 201 and created.json()["status"] == "created"
    deadline = time.monotonic() + 120
    while (view := client.get("/runs/doomed").json())["status"] == "created" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert view["status"] == "failed"
    assert "no config.json there" in view["error"]
    again = client.post("/runs", json={"config": config}, headers=AUTH)
    assert again.status_code == 409 and "exists" in again.json()["detail"]


def test_posted_configs_are_merged_over_the_run_defaults(redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MGPO_API_TOKEN", TOKEN)
    defaults = tmp_path / "run.yaml"
    defaults.write_text("rollout: {n: 1, engine: hf}\nlearner: {lr: 0.001}\n")
    settings = ServeConfig(state_dir=str(tmp_path), run_defaults=str(defaults))
    with TestClient(create_app(settings, redis_server.url)) as c:
        response = c.post("/runs", json={"config": {"learner": {"lr": "x"}}}, headers=AUTH)
    detail = response.json()["detail"]
    assert response.status_code == 422
    assert "rollout.n" in detail  # from the defaults
    assert "learner.lr" in detail and "'x'" in detail  # the posted value replaced the default's


def test_a_broken_run_defaults_file_stops_the_service_at_start(redis_server, tmp_path):
    from runtime.config import ConfigError

    settings = ServeConfig(state_dir=str(tmp_path), run_defaults=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml"):
        create_app(settings, redis_server.url)


def _posted(client, config):
    return client.post("/runs", json={"config": {"name": "hostile", **config}}, headers=AUTH)


def test_a_posted_run_may_not_name_another_redis_ray_or_folder(client):
    for config, field in (
        ({"queue": {"redis_url": "redis://10.0.0.9:6379"}}, "queue.redis_url"),
        ({"ray_address": "10.0.0.9:6379"}, "ray_address"),
        ({"output_dir": "/etc"}, "output_dir"),
    ):
        response = _posted(client, config)
        assert response.status_code == 422, config
        assert (
            response.json()["detail"] == f"{field}: a run created over the API uses the control plane's own"
        )
    assert client.get("/runs").json() == []  # nothing was registered, no driver started


def test_a_posted_run_reads_data_and_models_only_under_the_allowed_roots(client, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "escape").symlink_to(outside)  # a link inside the root that leads out of it
    for config in (
        {"data": {"path": "/etc"}},
        {"data": {"path": str(tmp_path / "escape")}},
        {"model": {"path": "/usr/lib"}},
        {"model": {"path": str(tmp_path / "escape")}},
    ):
        response = _posted(client, config)
        assert response.status_code == 403 and "outside the allowed roots" in response.json()["detail"], (
            config
        )


def test_prompts_the_loop_would_refuse_are_refused_at_the_door(client, dataset):
    _register(client, dataset)
    digest = client.post("/runs/r1/images", files=[("files", ("a.png", _png(), "image/png"))], headers=AUTH)
    (digest,) = digest.json()["images"]
    count = {"kind": "counting", "question": "How many?", "images": [digest], "answer": "²"}
    choice = {"question": "q?", "images": [digest, digest], "answer": "A", "choices": ["x", "y"]}
    for prompt, needle in (
        (count, "a counting answer is a whole number in digits 0-9, got '²'"),
        (choice, "a multiple-choice prompt has one image, this one has 2"),
    ):
        response = client.post("/runs/r1/prompts", json={"prompts": [prompt]}, headers=AUTH)
        assert response.status_code == 422 and needle in response.text, prompt
    strip = client.post(
        "/runs/r1/images", files=[("files", ("s.png", _png((1, 300)), "image/png"))], headers=AUTH
    )
    assert strip.status_code == 422 and "aspect ratio 300 is over the model's 200" in strip.json()["detail"]
    assert Queue(client.redis, "r1", "reader").depth()["prompts_len"] == 0


def test_a_dataset_is_enqueued_without_its_bad_records_which_are_listed(client, dataset):
    _register(client, dataset)
    other = write_synthetic(client.tmp.parent / f"{client.tmp.name}-other", n=2, seed=7, progress=False)
    folder = client.tmp / "mixed"
    folder.mkdir()
    lines = (other / "prompts.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | {"id": "bad-count", "kind": "counting", "choices": [], "answer": "²"}
    (folder / "prompts.jsonl").write_text("\n".join([*lines, json.dumps(bad), "{broken"]) + "\n")
    (folder / "images").symlink_to(other / "images")  # outside the allowed roots: images refused too
    refused = client.post("/runs/r1/datasets", json={"path": str(folder)}, headers=AUTH)
    assert refused.status_code == 422 and "outside the allowed roots" in refused.json()["detail"]
    (folder / "images").unlink()
    import shutil

    shutil.copytree(other / "images", folder / "images")
    response = client.post("/runs/r1/datasets", json={"path": str(folder)}, headers=AUTH)
    assert response.status_code == 202
    body = response.json()
    assert (body["enqueued"], body["refused"]) == (len(lines), 2)
    assert body["problems"][0].startswith("line 4: not a prompt record")
    assert body["problems"][1] == "bad-count: a counting answer is a whole number in digits 0-9, got '²'"


def test_a_dataset_path_that_cannot_be_read_is_4xx_never_500(client, dataset):
    _register(client, dataset)
    folder_as_file = client.tmp / "weird"
    (folder_as_file / "prompts.jsonl").mkdir(parents=True)  # a folder where the file should be
    latin = client.tmp / "latin"
    latin.mkdir()
    (latin / "prompts.jsonl").write_bytes(b'{"id": "\xe9"}\n')  # not UTF-8
    for path in (str(client.tmp / "a\x00b"), str(folder_as_file), str(latin)):
        response = client.post("/runs/r1/datasets", json={"path": path}, headers=AUTH)
        assert response.status_code == 422, (path, response.text)


@pytest.fixture
def live(redis_server, tmp_path, monkeypatch):
    """The app on a real uvicorn server (h11, as `mgpo serve` runs it), for what a test client cannot show."""
    import http.client
    import threading

    import uvicorn

    from runtime.redis_server import free_port

    monkeypatch.setenv("MGPO_API_TOKEN", TOKEN)
    settings = ServeConfig(state_dir=str(tmp_path / "state"), max_upload_mb=1, dataset_roots=(str(tmp_path),))
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    config = RunConfig(name="r1", output_dir=settings.state_dir)
    Runs(client).register("r1", config.model_dump(mode="json"), str(config.run_dir))
    Runs(client).set("r1", status="running")
    RunState(client, "r1").set(heartbeat=int(time.time()))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, redis_server.url), port=port, http="h11", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    server.should_exit = True
    thread.join(10)


def _chunked_upload(connection, headers, chunks):
    """Send a chunked POST of up to `chunks` 1 MB chunks; stop as soon as the server has answered."""
    connection.putrequest("POST", "/runs/r1/images")
    for key, value in {
        "Transfer-Encoding": "chunked",
        "Content-Type": "multipart/form-data; boundary=b0",
        **headers,
    }.items():
        connection.putheader(key, value)
    connection.endheaders()
    prelude = b'--b0\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    connection.sock.sendall(b"%x\r\n%s\r\n" % (len(prelude), prelude))
    sent = 0
    connection.sock.settimeout(0.2)
    for _ in range(chunks):
        try:
            connection.sock.sendall(b"100000\r\n" + b"x" * (1 << 20) + b"\r\n")
            sent += 1
            if connection.sock.recv(1, __import__("socket").MSG_PEEK):
                break  # an answer is waiting: the server stopped reading
        except (TimeoutError, BlockingIOError):
            continue
        except OSError:
            break
    connection.sock.settimeout(10)
    response = connection.getresponse()
    return response.status, json.loads(response.read()), sent


def test_a_mutation_without_a_token_is_refused_before_its_body_is_read(live):
    status, body, sent = _chunked_upload(live(), {}, chunks=40)
    assert status == 401 and body["detail"].startswith("missing bearer token")
    assert sent < 40  # answered while the 40 MB upload was still being sent


def test_a_chunked_body_over_the_limit_is_413_however_it_is_sent(live):
    status, body, sent = _chunked_upload(live(), AUTH, chunks=40)
    assert status == 413 and body["detail"] == "request body over the 1 MB limit"
    assert sent < 40


def test_an_oversized_header_is_refused(live):
    connection = live()
    connection.request("GET", "/healthz", headers={"X-Big": "y" * (1 << 20)})
    assert connection.getresponse().status in (400, 431)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_validation_error_quoting_a_non_finite_number_is_422_not_500(client, dataset, value):
    _register(client, dataset)
    body = '{"prompts": [{"question": "q", "images": ["%s"], "answer": "A", "choices": ["x", "y"], "target_box": [%s, 0, 1, 1]}]}'
    response = client.post(
        "/runs/r1/prompts",
        content=body % ("0" * 64, value),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert all("input" not in error for error in response.json()["detail"])


def test_an_error_never_echoes_a_huge_request(client, dataset):
    _register(client, dataset)
    prompt = {"question": "q", "images": ["0" * 64], "answer": "A", "choices": ["x", "y"]}
    response = client.post("/runs/r1/prompts", json={"prompts": [prompt] * 5000}, headers={**AUTH})
    assert response.status_code in (413, 422)
    assert len(response.content) < 10_000


def test_a_heavy_upload_is_decoded_off_the_event_loop(live):
    import threading

    pixels = np.zeros((8192, 8192), np.uint16)
    pixels[::7, ::5] = 40000
    heavy = io.BytesIO()
    Image.fromarray(pixels).save(heavy, "PNG")  # ~150 KB on the wire, 67 M pixels decoded
    boundary = "b1"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="h.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + heavy.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answers = {}

    def upload():
        connection = live()
        connection.request(
            "POST",
            "/runs/r1/images",
            body,
            {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        answers["upload"] = connection.getresponse().status
        answers["upload_done"] = time.perf_counter()

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(0.05)  # the upload is in, its decode under way (about a second here)
    connection = live()
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    healthz_done = time.perf_counter()
    thread.join(60)
    assert answers["upload"] == 201
    # a decode on the event loop would hold /healthz until the upload is answered
    assert healthz_done < answers["upload_done"], answers


def test_enqueueing_is_all_or_nothing_and_a_retry_never_doubles_prompts(client, dataset):
    _register(client, dataset)
    digest = client.post("/runs/r1/images", files=[("files", ("a.png", _png(), "image/png"))], headers=AUTH)
    (digest,) = digest.json()["images"]
    prompts = [
        {"id": f"p{i}", "question": "q?", "images": [digest], "answer": "A", "choices": ["x", "y"]}
        for i in range(3)
    ]
    first = client.post("/runs/r1/prompts", json={"prompts": prompts[:2]}, headers=AUTH).json()
    retry = client.post("/runs/r1/prompts", json={"prompts": prompts}, headers=AUTH).json()
    assert (first["enqueued"], first["duplicates"]) == (2, 0)
    assert (retry["enqueued"], retry["duplicates"]) == (1, 2)  # only the one the first request lacked
    queue = Queue(client.redis, "r1", "reader")
    assert queue.depth()["prompts_len"] == 3 and RunState(client.redis, "r1").read().enqueued == 3

    config = RunConfig(
        name="small", output_dir=str(client.tmp / "state"), data={"path": str(dataset)}, queue={"max_len": 4}
    )
    Runs(client.redis).register("small", config.model_dump(mode="json"), str(config.run_dir))
    Runs(client.redis).set("small", status="running")
    RunState(client.redis, "small").set(heartbeat=int(time.time()))
    Queue(client.redis, "small", "test").ensure_groups()
    many = [{**p, "id": f"m{i}"} for i, p in enumerate(prompts * 2)]  # 6 prompts, room for 4
    response = client.post("/runs/small/prompts", json={"prompts": many}, headers=AUTH)
    assert (
        response.status_code == 429
        and "room for 4 of 6 prompts; nothing was added" in response.json()["detail"]
    )
    assert Queue(client.redis, "small", "reader").depth()["prompts_len"] == 0


def test_dead_letters_are_listed_with_their_reason_and_counted_on_the_run(client, dataset):
    _register(client, dataset)
    queue = Queue(client.redis, "r1", "actor", claim_idle_ms=100, max_deliveries=1)
    queue.put_prompts(list(read_prompts(dataset))[:1])
    (message_id, record), *_ = queue.take_prompts(1, block_ms=10)
    queue.fail_prompt(message_id, "ValueError: the prompt is longer than max_model_len")
    time.sleep(0.15)
    assert queue.take_prompts(1, block_ms=10) == []
    (letter,) = client.get("/runs/r1/dead").json()
    assert letter == {
        "id": record.id,
        "kind": "multiple_choice",
        "question": record.question,
        "message_id": message_id,
        "reason": "delivered 1 times without completing: ValueError: the prompt is longer than max_model_len",
    }
    assert client.get("/runs/r1").json()["queue"]["dead_len"] == 1
    families = text_string_to_metric_families(client.get("/metrics").text)
    depth = {s.labels["stream"]: s.value for f in families for s in f.samples if s.name == "mgpo_queue_depth"}
    assert depth["dead"] == 1.0
    assert client.get("/runs/nope/dead").status_code == 404
