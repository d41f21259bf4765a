"""The monitoring artefacts: alert rules pass promtool, and every metric a dashboard panel or a rule uses is
one the processes export (a renamed metric breaks this test, not a dashboard in production)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from runtime.metrics import exported_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "mgpo-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "mgpo-dashboard.json"
METRIC = re.compile(r"(?<![\w:])mgpo_[a-z0-9_]+(?![\w:])")  # not recording rules (run:mgpo_...:rate5m)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: `make test` installs the Debian package prometheus")
        pytest.skip("promtool missing (Debian package prometheus; `make test` installs it)")
    return path


def test_alert_rules_are_valid():
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests():
    tests = RULES.with_name("mgpo-rules.test.yaml")
    result = subprocess.run(
        [_promtool(), "test", "rules", tests.name], capture_output=True, text=True, cwd=tests.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]] + [
        v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)
    ]


def test_every_metric_a_dashboard_panel_uses_is_exported():
    used = {m for expr in _dashboard_exprs() for m in METRIC.findall(expr)}
    assert len(used) > 25
    assert used <= exported_names(), sorted(used - exported_names())


def test_the_dashboard_covers_the_quantities_operators_watch():
    text = " ".join(_dashboard_exprs())
    for metric in (
        "mgpo_rollout_grounding_total",  # the headline
        "mgpo_learner_accuracy",
        "mgpo_queue_depth",
        "mgpo_learner_staleness_bucket",
        "mgpo_weight_sync_seconds_sum",
        "mgpo_learner_step_seconds_bucket",
        "mgpo_actors",
        "mgpo_learner_crops",  # how the policy looks closer (multi-turn)
    ):
        assert metric in text, metric


def test_every_metric_an_alert_rule_uses_is_exported():
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for expr in exprs for m in METRIC.findall(expr)}
    assert used and used <= exported_names(), sorted(used - exported_names())


def test_exported_names_follow_prometheus_conventions():
    names = exported_names()
    assert "mgpo_rollout_grounding_total" in names and "mgpo_learner_step_seconds_bucket" in names
    for name in names:
        assert re.fullmatch(r"mgpo_[a-z0-9_]+", name), name
        assert not name.endswith("_total_total"), name
