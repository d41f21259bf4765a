"""Schemathesis against the control plane's OpenAPI schema: generated requests (bounded) never get a 5xx.

POST /runs is left out: a valid generated config would start a real training driver; its bad bodies are
tested by hand in test_control.py."""

import atexit
import time

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from runtime.config import RunConfig, ServeConfig
from runtime.redis_server import RedisServer
from runtime.run_state import RunState
from services.control import create_app
from services.runs import Runs

TOKEN = "schema-token"


def _app():
    server = RedisServer().start()  # collected at import, so it lives as long as the test process
    atexit.register(server.cleanup)
    client = redis.Redis.from_url(server.url)
    config = RunConfig(name="r1", output_dir="/tmp/mgpo-schema-state")
    Runs(client).register("r1", config.model_dump(mode="json"), str(config.run_dir))
    Runs(client).set("r1", status="running")
    RunState(client, "r1").set(heartbeat=int(time.time()) + 10**6)
    return create_app(
        ServeConfig(state_dir="/tmp/mgpo-schema-state", dataset_roots=("/tmp/mgpo-schema-state",)), server.url
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).exclude(path="/runs", method="POST")


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("MGPO_API_TOKEN", TOKEN)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
