"""The chart's Grafana dashboard and PrometheusRule read metrics the bridge really exposes.

A bridge on the real broker, in ``both`` modes against the fake long-connection platform, is
driven through every path the dashboard and the alerts watch (handshake, the three kinds, a
duplicate, a dead letter, a 401, a publish failure that replaces the producer, an event over the
long connection); its ``/metrics`` text is parsed with prometheus_client's parser. The chart is
rendered with both features on; every PromQL expression of the dashboard and the rules is parsed
with Prometheus's own parser (``promcheck selectors``), and each vector selector must name a
series present in that output, with label names (matchers, ``by``/``on`` labels) the series has —
or one of the target labels Prometheus adds when scraping. The rules file must pass rulefmt's
checks (``promcheck rules``, what ``promtool check rules`` runs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.errors import OutOfOrderSequenceNumber
from prometheus_client.parser import text_string_to_metric_families

from bridge.kafka import build_producer
from bridge_devtools.lark_ws import FakeLongConnectionPlatform
from tests.support.helm import find_helm
from tests.support.kafka import FirstSendFails, read_topic
from tests.support.prometheus import check_rules, find_promcheck, selectors
from tests.support.samples import fresh_id, sample_event

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "lark-bridge"
#: Labels Prometheus (and the operator's ServiceMonitor) attach to every scraped series.
TARGET_LABELS = {"namespace", "pod", "service", "job", "instance", "container", "endpoint"}
APP_ID = "cli_monitoring_test"
APP_SECRET = "monitoring-app-secret-5e0b"


def _tool(found: str | None, what: str) -> str:
    if found is None:
        reason = f"no {what}: run .ci/helm.sh and .ci/promcheck.sh (they build into ~/.cache/lark-bridge/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def helm() -> str:
    return _tool(find_helm(), "helm")


@pytest.fixture(scope="module")
def promcheck() -> str:
    return _tool(find_promcheck(), "promcheck")


@pytest.fixture
async def platform() -> Any:
    fake = FakeLongConnectionPlatform(APP_ID, APP_SECRET)
    await fake.start()
    yield fake
    await fake.close()


def render(helm: str, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    out = subprocess.run(
        [helm, "template", "t", str(CHART), "--namespace", "lark", "--kube-version", "1.30.0", "--values", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


MONITORING = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "config": {"lark_subscription_mode": "both", "lark_app_id": APP_ID, "lark_ip_allowlist": "report"},
    "secrets": {"larkVerificationToken": "t", "larkAppSecret": "s"},
}


def dashboard_and_rules(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return json.loads(cm["data"]["lark-bridge.json"]), rule["spec"]


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables given values PromQL accepts."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", "x").replace("$pod", "x")


def dashboard_queries(dashboard: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """The panels' PromQL expressions, and the variables' ``label_values(selector, label)`` pairs."""
    exprs = [grafana_to_promql(t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    label_values = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"]
        assert q.startswith("label_values(") and q.endswith(")"), q
        selector, _, label = q[len("label_values(") : -1].rpartition(",")
        label_values.append((grafana_to_promql(selector.strip()), label.strip()))
    return exprs, label_values


async def drive_every_path(broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any) -> str:
    """Run a bridge through every path the dashboard and the rules watch; its /metrics text."""
    made: list[Any] = []

    def factory(settings: Any) -> Any:  # the first producer's first send hits a fatal error
        producer = build_producer(settings)
        wrapped = FirstSendFails(producer, OutOfOrderSequenceNumber()) if not made else producer
        made.append(wrapped)
        return wrapped

    bridge = await start_bridge(
        broker.bootstrap_servers,
        producer_factory=factory,
        BRIDGE_LARK_SUBSCRIPTION_MODE="both",
        BRIDGE_LARK_APP_ID=APP_ID,
        BRIDGE_LARK_APP_SECRET=APP_SECRET,
        BRIDGE_LARK_DOMAIN=platform.url,
    )
    p = bridge.platform
    first = sample_event("vc.room.created_v1", event_id=fresh_id())
    assert (await bridge.send(p.request(first)))[0] == 503  # publish failure, producer replaced
    await bridge.wait_ready()
    assert (await bridge.send(p.handshake(bridge.settings.lark_verification_token.get_secret_value(), "c")))[0] == 200
    for kind in ("vc.room.created_v1", "vc.reserve_config.updated_v1", "third_party_meeting_room_event_created"):
        assert (await bridge.send(p.request(sample_event(kind, event_id=fresh_id()))))[0] == 200
    assert (await bridge.send(p.request(first)))[0] == 200  # the retry of the 503
    assert (await bridge.send(p.request(first)))[0] == 200  # and a duplicate
    unknown = sample_event("vc.room.created_v1", event_id=fresh_id())
    unknown["header"]["event_type"] = "im.message.receive_v1"
    assert (await bridge.send(p.request(unknown)))[0] == 200  # a dead letter
    bad = p.request(sample_event("vc.room.created_v1", event_id=fresh_id()))
    bad = dataclasses.replace(bad, headers={**bad.headers, "X-Lark-Signature": "0" * 64})
    assert (await bridge.send(bad))[0] == 401
    body = json.dumps(sample_event("vc.room.created_v1", token=None, event_id=fresh_id())).encode()
    assert (await platform.wait_ack(await platform.push(body))).code == 200
    await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=1)
    status, text = await bridge.get("/metrics")
    assert status == 200
    return text


def series_labels(metrics_text: str) -> dict[str, dict[str, set[str]]]:
    """``{sample name: {label name: values seen}}`` of a /metrics text, from prometheus_client's parser."""
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            labels = out.setdefault(s.name, {})
            for k, v in s.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


async def test_every_metric_and_label_the_dashboard_and_alerts_use_is_in_the_bridges_output(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any, helm: str, promcheck: str, tmp_path: Path
) -> None:
    dashboard, rules = dashboard_and_rules(render(helm, tmp_path, MONITORING))
    exprs, label_values = dashboard_queries(dashboard)
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 15 and len(rule_exprs) >= 8
    real = series_labels(await drive_every_path(broker, platform, start_bridge))

    parsed = selectors(promcheck, exprs + rule_exprs + [s for s, _ in label_values])
    used_metrics = set()
    for item in parsed:
        assert item["selectors"], f"no series selected by {item['expr']}"
        for sel in item["selectors"]:
            metric = sel["metric"]
            used_metrics.add(metric)
            assert metric in real, f"{metric} (in {item['expr']!r}) is not in the bridge's /metrics"
            have = set(real[metric]) | TARGET_LABELS
            used = {m["name"] for m in sel["matchers"]} | set(sel["grouping"])
            assert used <= have, f"{item['expr']!r}: {metric} has no label {sorted(used - have)}"
            for m in sel["matchers"]:  # an exact value of the bridge's own label must occur
                if m["type"] == "=" and m["name"] not in TARGET_LABELS:
                    assert m["value"] in real[metric][m["name"]], f"{metric}{{{m['name']}={m['value']!r}}} never seen"
    assert {label for _, label in label_values} <= TARGET_LABELS  # the variables' values come from the scrape
    # What an operator needs at a glance is there.
    for wanted in (
        "bridge_requests_total",
        "bridge_events_published_total",
        "bridge_dead_letters_total",
        "bridge_auth_failures_total",
        "bridge_duplicates_suppressed_total",
        "bridge_request_duration_seconds_bucket",
        "bridge_broker_ack_duration_seconds_bucket",
        "bridge_ready",
        "bridge_producer_replacements_total",
        "bridge_dedup_entries",
    ):
        assert wanted in used_metrics, wanted


def test_the_rules_pass_prometheus_rule_checks(helm: str, promcheck: str, tmp_path: Path) -> None:
    _, rules = dashboard_and_rules(render(helm, tmp_path, MONITORING))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    report = check_rules(promcheck, path)
    assert report.strip().endswith(f"{sum(len(g['rules']) for g in rules['groups'])} rules")
    broken = {**rules, "groups": [{**rules["groups"][0], "rules": [{"alert": "X", "expr": "sum by (a (b)"}]}]}
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(AssertionError, match="parse error"):  # the check can fail
        check_rules(promcheck, path)
