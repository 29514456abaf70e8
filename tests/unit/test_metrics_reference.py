"""The metrics reference (``python -m bridge metrics-reference``, docs/metrics.md) is the truth:
every metric of :class:`bridge.metrics.Metrics` is in it under the name ``/metrics`` shows, and
every label has a declared, bounded set of values that agrees with the code that sets it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from bridge import publish
from bridge.ingress import webhook
from bridge.ingress.connect import RETRYABLE_CODES
from bridge.metrics import LabelValues, Metrics, label_values, metric_docs, metrics_markdown

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


def source(relative: str) -> str:
    return (BRIDGE / relative).read_text(encoding="utf-8")


def declared(metric: str, label: str) -> LabelValues:
    return label_values()[metric][label]


def test_every_metric_of_the_registry_is_in_the_reference_under_its_exposition_name() -> None:
    metrics = Metrics()
    for m in vars(metrics).values():  # a labelled metric shows its samples once it has a child
        if isinstance(m, MetricWrapperBase) and m._labelnames:
            m.labels(*("x" for _ in m._labelnames))
    exposition = generate_latest(metrics.registry).decode()
    names = [d.name for d in metric_docs()]
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(names) == len(set(names)) == len(list(metrics.registry.collect())) == len(defined)
    for d in metric_docs():
        assert f"# TYPE {d.name} {d.type}\n" in exposition
        sample = f"{d.name}_bucket" if d.type == "histogram" else d.name
        assert re.search(rf"^{sample}[{{ ]", exposition, flags=re.M), sample
        assert f"`{d.name}`" in metrics_markdown()


def test_every_label_has_declared_values_and_nothing_else_is_declared() -> None:
    declarations = label_values()
    labelled = {(d.name, label) for d in metric_docs() for label in d.labels}
    declared_pairs = {(metric, label) for metric, labels in declarations.items() for label in labels}
    assert labelled - declared_pairs == set(), "declare the values of these labels in bridge.metrics.label_values"
    assert declared_pairs - labelled == set(), "these declarations name no label of a metric any more"
    for metric, labels in declarations.items():
        for label, values in labels.items():
            assert values.values or values.families, (metric, label)
            assert "unbounded" not in values.note.lower(), (metric, label)


def test_an_undeclared_label_stops_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    real = label_values()
    del real["bridge_dead_letters_total"]["reason"]
    monkeypatch.setattr("bridge.metrics.label_values", lambda: real)
    with pytest.raises(ValueError, match="bridge_dead_letters_total: label 'reason'"):
        metrics_markdown()


def test_request_outcomes_and_statuses_are_those_the_webhook_and_delivery_set() -> None:
    src = source("ingress/webhook.py")
    assigned = re.findall(r'rl\.(?:status, rl\.)?outcome = (?:[\w.]+, )?"(\w+)"', src)
    kinds = re.findall(r'Outcome\("(\w+)"', source("delivery.py"))
    outcomes = {*webhook._OUTCOME_OF_STATUS.values(), *assigned, *kinds, webhook.RequestLog("", 0.0).outcome}
    outcomes.add(webhook.INTERNAL_ERROR.outcome)
    assert set(declared("bridge_requests_total", "outcome").values) == outcomes
    statuses = {*webhook._OUTCOME_OF_STATUS, *map(int, re.findall(r"rl\.status, rl\.outcome = (\d+)", src))}
    statuses |= {webhook.INTERNAL_ERROR.status, webhook.RequestLog("", 0.0).status}
    statuses |= {200, 405}  # every answer that is not an error; aiohttp's own for a GET to the webhook
    assert set(declared("bridge_requests_total", "status").values) == {str(s) for s in statuses}


def test_egress_refresh_failure_reasons_cover_every_open_api_error_name() -> None:
    from bridge.lark_api import FIXED_ERROR_NAMES

    literal = set(re.findall(r'name="(\w+)"', source("lark_api.py")))
    literal |= {"no_answer"}  # _code_name's own
    assert literal == set(FIXED_ERROR_NAMES)
    reasons = declared("bridge_egress_ips_refresh_failures_total", "reason")
    for name in ("SCOPE_REQUIRED", "code_1234", "http_502", "transport_ClientConnectorError", *FIXED_ERROR_NAMES):
        assert reasons.admits(name), name
    assert reasons.admits("empty_list") and reasons.admits("error") and not reasons.admits("SCOPE REQUIRED")


def test_producer_replacement_reasons_are_the_fatal_errors() -> None:
    fatal = {cls.__name__ for cls in publish._FATAL}
    assert set(declared("bridge_producer_replacements_total", "reason").values) == fatal | {publish.TRANSACTION_STUCK}
    assert fatal <= set(declared("bridge_publish_failures_total", "reason").values)


def test_registry_reasons_are_those_the_client_raises() -> None:
    src = source("registry.py")
    raised = set(re.findall(r'RegistryError\(\s*"(\w+)"', src)) | set(re.findall(r'not_found="(\w+)"', src))
    raised -= {"subject_not_found"}  # is_compatible's own: answered as "compatible", never raised on
    assert set(declared("bridge_schema_registry_failures_total", "reason").values) == raised


def test_long_connection_reasons_are_those_it_sets() -> None:
    src = source("ingress/long_connection.py")
    lost = {v for line in re.findall(r"lost = (.+)", src) for v in re.findall(r'"(\w+)"', line)}
    assert set(declared("bridge_long_connection_disconnects_total", "reason").values) == lost | {"error"}
    outcome = declared("bridge_long_connection_connects_total", "outcome")
    templates = re.findall(r'RetryableError\(f?"([^"]+)"\)', src + source("ingress/connect.py"))
    assert len(templates) >= 6
    for template in templates:
        assert outcome.admits(re.sub(r"\{[^}]+\}", "503", template)), template
    assert all(outcome.admits(f"endpoint_code_{code}") for code in RETRYABLE_CODES)
    assert outcome.admits("connected") and not outcome.admits("refused: code 1")


def test_label_values_admit_only_their_own() -> None:
    values = LabelValues(("a",), families=("connect_<exception class>",))
    assert values.admits("a") and values.admits("connect_ClientOSError")
    assert not values.admits("b") and not values.admits("connect_") and not values.admits("connect_a b")
