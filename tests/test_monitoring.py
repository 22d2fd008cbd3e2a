"""Monitoring as files (deploy/monitoring/): the alert rules pass `promtool check rules` and their own unit
tests (`promtool test rules`), and every metric the rules and the Grafana dashboard name is one that a
running `dagmirror run` really exposes on /metrics (and the dashboard shows every one it exposes)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .daemon import Daemon
from .releases import publish

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "dagmirror-alerts.yaml"
RULE_TESTS = MONITORING / "dagmirror-alerts.test.yaml"
DASHBOARD = MONITORING / "dagmirror-dashboard.json"
METRIC = re.compile(r"\bdagmirror_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def names_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@pytest.fixture(scope="module")
def exposed(moto_endpoint: str, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Sample names on /metrics of a real daemon mirroring a release (so the release series exists)."""
    from dagmirror.devtools.corpus import create_bucket

    bucket = "monitoring-metrics"
    create_bucket(s3, bucket)
    publish(s3, bucket, "dags/prod/", {"a.py": b"a = 1\n"})
    dest = tmp_path_factory.mktemp("monitoring") / "dags"
    with Daemon(f"s3://{bucket}/dags/prod", dest, moto_endpoint, "--interval", "60") as daemon:
        daemon.until(lambda: daemon.get("/readyz")[0] == 200, what="ready")
        text = daemon.get("/metrics")[1]
        daemon.signal()
        assert daemon.finish() == 0
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    tests = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_metric_the_rules_and_dashboard_name_is_exposed(exposed: set[str]) -> None:
    named = names_in(rule_exprs()) | names_in(dashboard_exprs())
    assert named, "no metric found in the files"
    assert named - exposed == set()


def test_the_dashboard_shows_every_metric_dagmirror_exposes(exposed: set[str]) -> None:
    families = {family(n) for n in exposed if n.startswith("dagmirror_") and not n.endswith("_created")}
    shown = {family(n) for n in names_in(dashboard_exprs())}
    assert families - shown == set()


def test_the_rules_are_the_alerts_the_operations_doc_describes() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = [r["alert"] for g in doc["groups"] for r in g["rules"]]
    assert names == [
        "DagmirrorStale",
        "DagmirrorDeleteGuardTripped",
        "DagmirrorUntrustedRelease",
        "DagmirrorObjectsFailing",
        "DagmirrorRejectedKeys",
        "DagmirrorPassesFailing",
    ]
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "../deploy/monitoring/dagmirror-alerts.yaml" in operations
    assert "../deploy/monitoring/dagmirror-dashboard.json" in operations
    assert "alert: DagmirrorStale" not in operations  # one copy, the file, not a second one in the doc


def test_the_dashboard_is_importable() -> None:
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "mapping"}
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        for target in panel["targets"]:
            if target["expr"] in _PER_DAEMON:  # counted per daemon (a queue, a port): no mapping label
                continue
            assert 'mapping=~"$mapping"' in target["expr"], target["expr"]


# The per-daemon counters (metrics.py: the event queue and POST /sync are shared by every mapping).
_PER_DAEMON = {
    "sum by (result) (increase(dagmirror_events_total[5m]))",
    "increase(dagmirror_events_deleted_total[5m])",
    "sum by (operation) (increase(dagmirror_event_queue_errors_total[5m]))",
    "sum by (outcome) (increase(dagmirror_sync_requests_total[5m]))",
}
