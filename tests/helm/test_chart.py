"""The Helm chart helm/lark-bridge, checked on its rendered manifests (``helm template``).

What the chart can configure is derived from ``bridge.settings`` (never copied), so a setting
added to the model without a way to set it from values.yaml fails here.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.settings import DEPRECATED_VARIABLES, load_settings, setting_docs
from tests.support.docs import shell_commands

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lark-bridge"
RELEASE = "t"
NAMESPACE = "lark-test"
# The oldest Kubernetes .ci/helm.sh validates against. Passing it explicitly also keeps a helm
# built without release ldflags (default 1.20) from failing the chart's kubeVersion.
KUBE_VERSION = "1.30.0"

DOCS = setting_docs()
#: values.schema.json's config keys of renamed settings (bridge.settings.DEPRECATED_VARIABLES).
DEPRECATED_KEYS = {old.removeprefix("BRIDGE_").lower() for old in DEPRECATED_VARIABLES}
ALL_ENV = {r.env for r in DOCS}
SECRET_ENV = {r.env for r in DOCS if r.secret}
# Non-secret settings with no default: the values that make the chart render them in tests.
UNSET_SAMPLES: dict[str, Any] = {
    "BRIDGE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "BRIDGE_KAFKA_SASL_USERNAME": "bridge-user",
    "BRIDGE_KAFKA_SSL_CAFILE": "/etc/ssl/kafka/ca.pem",
    "BRIDGE_KAFKA_TOPIC_REPLICATION_FACTOR": 3,
    "BRIDGE_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": 2,
    "BRIDGE_SCHEMA_REGISTRY_URL": "https://registry.example.com/apis/ccompat/v7",
    "BRIDGE_SCHEMA_REGISTRY_USERNAME": "bridge-registry-user",
    "BRIDGE_SCHEMA_REGISTRY_CAFILE": "/etc/ssl/registry/ca.pem",
    "BRIDGE_LARK_APP_ID": "cli_a1b2c3d4e5f6",
    "BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.vc.room.created_v1=binary,lark.bridge.dead_letter=structured",
}
# One sentinel per secret value key under `secrets:` in values.yaml.
SENTINELS = {
    "larkVerificationToken": "sentinel-verification-token-5f1c",
    "larkEncryptKey": "sentinel-encrypt-key-9a0e",
    "larkEncryptKeyPrevious": "sentinel-encrypt-key-previous-77d2",
    "kafkaSaslPassword": "sentinel-sasl-password-c3b8",
    "schemaRegistryPassword": "sentinel-registry-password-41ad",
    "larkAppSecret": "sentinel-app-secret-0b7e",
}
SASL = {
    "config": {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "bridge",
    }
}
EVERYTHING_ON = {
    "ingress": {"enabled": True, "hosts": ["bridge.example.com"]},
    "autoscaling": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "networkPolicy": {"enabled": True, "egress": {"enabled": True}},
}


# --- rendering ------------------------------------------------------------------------------


class HelmError(Exception):
    """``helm`` exited non-zero; the message is its output."""


@dataclass(frozen=True)
class Rendered:
    """The documents of one ``helm template`` run."""

    docs: list[dict[str, Any]]
    text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        assert isinstance(container, dict)
        return container

    @property
    def env_configmap(self) -> dict[str, str]:
        """Data of the ConfigMap the container reads with envFrom."""
        refs = [e["configMapRef"]["name"] for e in self.container.get("envFrom", [])]
        assert len(refs) == 1, refs
        (cm,) = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == refs[0]]
        data: dict[str, str] = cm.get("data") or {}
        return data


def run_helm(helm: str, *args: str) -> str:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        # helm lint prints its findings on stdout and only a summary on stderr.
        raise HelmError(f"{proc.stdout.strip()}\n{proc.stderr.strip()}".strip())
    return proc.stdout


class Helm:
    """``helm template`` / ``helm lint`` of the chart with values given as a mapping (written to a
    values file, so types are kept) and/or ``--set key=value`` pairs."""

    def __init__(self, helm: str, tmp: Path) -> None:
        self.helm = helm
        self.tmp = tmp
        self.count = 0

    def _args(self, values: Mapping[str, Any] | None, sets: Mapping[str, str] | None) -> list[str]:
        args: list[str] = []
        if values is not None:
            self.count += 1
            path = self.tmp / f"values-{self.count}.yaml"
            path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
            args += ["--values", str(path)]
        for key, value in (sets or {}).items():
            args += ["--set", f"{key}={value}"]
        return args

    def render(
        self,
        values: Mapping[str, Any] | None = None,
        sets: Mapping[str, str] | None = None,
        *extra: str,
        chart: Path = CHART,
    ) -> Rendered:
        text = run_helm(
            self.helm,
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *self._args(values, sets),
            *extra,
        )
        return Rendered(docs=[d for d in yaml.safe_load_all(text) if d], text=text)

    def lint(self, values: Mapping[str, Any] | None = None, *extra: str) -> str:
        return run_helm(
            self.helm,
            "lint",
            "--strict",
            "--kube-version",
            KUBE_VERSION,
            str(CHART),
            *self._args(values, None),
            *extra,
        )


RenderFn = Callable[..., Rendered]


@pytest.fixture
def chart(helm: str, tmp_path: Path) -> Helm:
    return Helm(helm, tmp_path)


@pytest.fixture
def render(chart: Helm) -> RenderFn:
    return chart.render


@pytest.fixture
def chart_with_notes(tmp_path: Path) -> Path:
    """A copy of the chart with one extra template that renders NOTES.txt into a ConfigMap:
    ``helm template`` never prints NOTES.txt and ``helm install --dry-run`` wants a cluster."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "zz-test-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-notes\ndata:\n"
        '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}\n',
        encoding="utf-8",
    )
    return copy


def chart_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return loaded


def field_of(env: str) -> str:
    return env.removeprefix("BRIDGE_").lower()


def secret_sets(**overrides: str) -> dict[str, str]:
    return {f"secrets.{k}": v for k, v in (SENTINELS | overrides).items()}


def every_config_value() -> dict[str, Any]:
    """values.yaml's config with every optional (unset) setting given a value."""
    config = dict(chart_values()["config"])
    missing = {r.env for r in DOCS if r.default == "(unset)" and not r.secret} - set(UNSET_SAMPLES)
    assert not missing, f"add a sample value for {sorted(missing)} to UNSET_SAMPLES"
    for env, value in UNSET_SAMPLES.items():
        config[field_of(env)] = value
    return config


def env_names(r: Rendered) -> set[str]:
    """Every BRIDGE_* variable the container gets: envFrom ConfigMap keys and env entries."""
    names = {k for k in r.env_configmap if k.startswith("BRIDGE_")}
    names |= {e["name"] for e in r.container.get("env", []) if e["name"].startswith("BRIDGE_")}
    return names


def secret_refs(r: Rendered) -> dict[str, dict[str, Any]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in r.container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def container_environment(r: Rendered, existing: dict[str, str] | None = None) -> dict[str, str]:
    """The BRIDGE_* environment the pod would see, resolving secretKeyRefs against the rendered
    Secret (or ``existing``, the data of an existing Secret)."""
    env = dict(r.env_configmap)
    secrets = {s["metadata"]["name"]: s for s in r.of_kind("Secret")}
    for name, ref in secret_refs(r).items():
        if ref["name"] in secrets:
            data = secrets[ref["name"]].get("data") or {}
            if ref["key"] in data:
                env[name] = base64.b64decode(data[ref["key"]]).decode()
                continue
        elif existing is not None and ref["key"] in existing:
            env[name] = existing[ref["key"]]
            continue
        assert ref.get("optional"), f"{name}: required key {ref['key']} missing"
    for e in r.container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


# --- values.yaml / schema mirror the settings model ----------------------------------------


def test_values_config_has_one_key_per_non_secret_setting() -> None:
    expected = {field_of(r.env) for r in DOCS if not r.secret}
    assert set(chart_values()["config"]) == expected


def test_values_config_defaults_are_the_settings_defaults() -> None:
    config = chart_values()["config"]
    for row in DOCS:
        if row.secret:
            continue
        value = config[field_of(row.env)]
        if row.default == "(unset)":
            assert value in ("", None), row.env
        elif isinstance(value, bool):
            assert str(value).lower() == row.default, row.env
        else:
            assert str(value) == row.default, row.env


def test_schema_config_properties_match_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == {field_of(r.env) for r in DOCS if not r.secret} | DEPRECATED_KEYS
    assert all(config["properties"][key]["deprecated"] for key in DEPRECATED_KEYS)


def test_every_secret_setting_has_a_value_and_a_key_name() -> None:
    secrets = chart_values()["secrets"]
    secret_fields = {field_of(e) for e in SECRET_ENV}
    camel = {"".join(p.capitalize() if i else p for i, p in enumerate(f.split("_"))) for f in secret_fields}
    assert set(secrets["keys"]) == camel
    assert camel <= set(secrets)
    assert set(SENTINELS) == camel


# --- every setting is reachable, and nothing else --------------------------------------------


def test_chart_can_set_exactly_the_settings(render: RenderFn) -> None:
    r = render({"config": every_config_value()}, secret_sets())
    assert env_names(r) == ALL_ENV


def test_existing_secret_wires_every_secret_setting(render: RenderFn) -> None:
    r = render({"config": every_config_value(), "secrets": {"existingSecret": "creds"}})
    assert env_names(r) == ALL_ENV
    assert set(secret_refs(r)) == SECRET_ENV


def test_secrets_are_never_in_the_configmap(render: RenderFn) -> None:
    r = render({"config": every_config_value()}, secret_sets())
    assert not set(r.env_configmap) & SECRET_ENV
    assert set(secret_refs(r)) == SECRET_ENV


def test_unset_optional_settings_are_not_rendered(render: RenderFn) -> None:
    cm = render(None, {"secrets.larkVerificationToken": "t"}).env_configmap
    unset = {r.env for r in DOCS if r.default == "(unset)" and not r.secret}
    assert not unset & set(cm)
    assert all(v != "" for v in cm.values())


def test_config_typo_is_rejected_by_the_schema(render: RenderFn) -> None:
    with pytest.raises(HelmError, match="http_prot"):
        render({"config": {"http_prot": 9000}})


def test_bridge_env_in_extra_env_is_refused(render: RenderFn) -> None:
    with pytest.raises(HelmError, match="extraEnv must not set BRIDGE_LOG_LEVEL"):
        render({"extraEnv": [{"name": "BRIDGE_LOG_LEVEL", "value": "DEBUG"}]})


# --- the rendered environment is one the bridge accepts --------------------------------------

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_render_an_environment_the_bridge_loads(render: RenderFn, values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text(encoding="utf-8"))
    r = render(values)
    existing = None
    if values.get("secrets", {}).get("existingSecret"):
        keys = values["secrets"]["keys"]
        existing = {keys["larkVerificationToken"]: "token", keys["kafkaSaslPassword"]: "pw"}
    settings = load_settings(container_environment(r, existing))
    config = values.get("config", {})
    assert settings.kafka_bootstrap_servers == config["kafka_bootstrap_servers"]
    assert settings.kafka_security_protocol == config.get("kafka_security_protocol", "PLAINTEXT")
    assert settings.shutdown_timeout_s == float(config.get("shutdown_timeout_s", 20))


def test_the_deprecated_publish_timeout_key_still_sets_the_answer_deadline(render: RenderFn) -> None:
    r = render({"config": {"kafka_publish_timeout_s": 2.5}}, {"secrets.larkVerificationToken": "t"})
    assert r.env_configmap["BRIDGE_ANSWER_DEADLINE_S"] == "2.5"
    assert "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S" not in r.env_configmap
    assert load_settings(container_environment(r)).answer_deadline_s == 2.5


def test_numbers_survive_rendering(render: RenderFn) -> None:
    """Values files give numbers as float64; 1000000 must not become "1e+06"."""
    r = render(
        {"config": {"dedup_max_entries": 1000000, "answer_deadline_s": 2.5}},
        {"secrets.larkVerificationToken": "t"},
    )
    cm = r.env_configmap
    assert cm["BRIDGE_DEDUP_MAX_ENTRIES"] == "1000000"
    assert cm["BRIDGE_HTTP_MAX_BODY_BYTES"] == "1048576"
    assert cm["BRIDGE_ANSWER_DEADLINE_S"] == "2.5"
    assert cm["BRIDGE_KAFKA_CREATE_TOPICS"] == "true"
    settings = load_settings(container_environment(r))
    assert settings.dedup_max_entries == 1_000_000
    assert settings.answer_deadline_s == 2.5


# --- probes, ports, shutdown ------------------------------------------------------------------


@pytest.mark.parametrize("port", [None, 9090])
def test_probes_hit_healthz_and_readyz_on_the_container_port(render: RenderFn, port: int | None) -> None:
    values = {} if port is None else {"config": {"http_port": port}}
    r = render(values)
    expected_port = int(r.env_configmap["BRIDGE_HTTP_PORT"])
    assert expected_port == (port or 8080)
    ports = {p["name"]: p["containerPort"] for p in r.container["ports"]}

    def probe_port(probe: dict[str, Any]) -> int:
        p = probe["httpGet"]["port"]
        return ports[p] if isinstance(p, str) else int(p)

    assert r.container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert r.container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probe_port(r.container["livenessProbe"]) == expected_port
    assert probe_port(r.container["readinessProbe"]) == expected_port
    svc = r.one("Service")["spec"]["ports"][0]
    assert ports[svc["targetPort"]] == expected_port


def test_runs_python_m_bridge_serve(render: RenderFn) -> None:
    c = render().container
    assert c["command"] + c["args"] == ["python", "-m", "bridge", "serve"]


def prestop_seconds(r: Rendered) -> float:
    cmd = r.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if cmd is None:
        return 0.0
    assert cmd[0] == "/bin/sleep"
    return float(cmd[1])


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"config": {"shutdown_timeout_s": 25}, "terminationGracePeriodSeconds": 40},
        {"lifecycle": {"preStopSleepSeconds": 0}, "terminationGracePeriodSeconds": 21},
    ],
)
def test_grace_period_exceeds_prestop_plus_shutdown_timeout(render: RenderFn, values: dict[str, Any]) -> None:
    r = render(values)
    shutdown = float(r.env_configmap["BRIDGE_SHUTDOWN_TIMEOUT_S"])
    assert r.pod["terminationGracePeriodSeconds"] > shutdown + prestop_seconds(r)


def test_default_prestop_pause_and_grace(render: RenderFn) -> None:
    r = render()
    assert prestop_seconds(r) == 5
    assert r.pod["terminationGracePeriodSeconds"] == 30
    assert r.env_configmap["BRIDGE_SHUTDOWN_TIMEOUT_S"] == "20"


@pytest.mark.parametrize(
    "values",
    [
        {"terminationGracePeriodSeconds": 25},  # == 20 + 5
        {"config": {"shutdown_timeout_s": 26.5}},  # 26.5 + 5 > 30
        {"lifecycle": {"preStopSleepSeconds": 10}},
    ],
)
def test_too_short_grace_period_fails_rendering(render: RenderFn, values: dict[str, Any]) -> None:
    with pytest.raises(HelmError, match="terminationGracePeriodSeconds"):
        render(values)


# --- secrets ------------------------------------------------------------------------------------


def _secret_forms(value: str) -> set[str]:
    return {value, base64.b64encode(value.encode()).decode()}


@pytest.mark.parametrize("extra", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_secret_values_land_only_in_the_secret(render: RenderFn, extra: dict[str, Any]) -> None:
    r = render({**SASL, **extra}, secret_sets())
    (secret,) = r.of_kind("Secret")
    decoded = {base64.b64decode(v).decode() for v in secret["data"].values()}
    assert set(SENTINELS.values()) <= decoded
    for doc in r.docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for sentinel in SENTINELS.values():
            for form in _secret_forms(sentinel):
                assert form not in text, f"{doc['kind']} contains a secret value"


def test_existing_secret_renders_no_secret_and_is_referenced(render: RenderFn) -> None:
    keys = {
        "larkVerificationToken": "tok",
        "larkEncryptKey": "ek",
        "larkEncryptKeyPrevious": "ek-old",
        "kafkaSaslPassword": "pw",
    }
    r = render({"secrets": {"existingSecret": "my-creds", "keys": keys}}, secret_sets())
    assert r.of_kind("Secret") == []
    refs = secret_refs(r)
    assert {ref["name"] for ref in refs.values()} == {"my-creds"}
    assert refs["BRIDGE_LARK_VERIFICATION_TOKEN"] == {"name": "my-creds", "key": "tok"}
    assert refs["BRIDGE_LARK_ENCRYPT_KEY"] == {"name": "my-creds", "key": "ek", "optional": True}
    assert refs["BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS"]["key"] == "ek-old"
    assert refs["BRIDGE_KAFKA_SASL_PASSWORD"]["key"] == "pw"
    for sentinel in SENTINELS.values():
        for form in _secret_forms(sentinel):
            assert form not in r.text
    annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def pod_annotations(r: Rendered) -> dict[str, str]:
    annotations: dict[str, str] = r.deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_checksum_changes_when_a_secret_value_changes(render: RenderFn) -> None:
    a = pod_annotations(render(None, secret_sets()))
    b = pod_annotations(render(None, secret_sets(larkEncryptKey="rotated-encrypt-key")))
    assert a["checksum/secret"] != b["checksum/secret"]
    assert a["checksum/config"] == b["checksum/config"]


def test_checksum_changes_when_config_changes(render: RenderFn) -> None:
    a = pod_annotations(render(None, secret_sets()))
    b = pod_annotations(render({"config": {"log_level": "DEBUG"}}, secret_sets()))
    assert a["checksum/config"] != b["checksum/config"]
    assert a["checksum/secret"] == b["checksum/secret"]


def test_sasl_without_password_fails_rendering(render: RenderFn) -> None:
    with pytest.raises(HelmError, match="kafkaSaslPassword"):
        render(SASL, {"secrets.larkVerificationToken": "t"})


# --- hardening -------------------------------------------------------------------------------


def test_security_context_is_hardened(render: RenderFn) -> None:
    r = render()
    pod, c = r.pod, r.container
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    (tmp_mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert tmp_mount["name"] in empty_dirs
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]


@pytest.mark.parametrize("source", ["secretName", "configMapName"])
def test_kafka_ca_is_mounted_and_pointed_at(render: RenderFn, source: str) -> None:
    r = render({"kafkaCa": {source: "kafka-ca", "key": "ca.pem"}})
    cafile = r.env_configmap["BRIDGE_KAFKA_SSL_CAFILE"]
    (mount,) = [m for m in r.container["volumeMounts"] if m["name"] == "kafka-ca"]
    assert cafile == mount["mountPath"] + "/ca.crt"
    assert mount["readOnly"] is True
    (volume,) = [v for v in r.pod["volumes"] if v["name"] == "kafka-ca"]
    body = volume.get("secret") or volume.get("configMap")
    assert body["items"] == [{"key": "ca.pem", "path": "ca.crt"}]


# --- schema -----------------------------------------------------------------------------------


WRONG_TYPES = [
    {"config": {"http_port": "eighty"}},
    {"config": {"answer_deadline_s": "2s"}},
    {"config": {"kafka_create_topics": "yes"}},
    {"config": {"kafka_compression": "brotli"}},
    {"replicaCount": "two"},
    {"terminationGracePeriodSeconds": True},
    {"secrets": {"existingSecret": ["not", "a", "string"]}},
    {"ingress": {"hosts": "bridge.example.com"}},
]


@pytest.mark.parametrize("values", WRONG_TYPES, ids=json.dumps)
def test_schema_rejects_wrong_types(chart: Helm, values: dict[str, Any]) -> None:
    with pytest.raises(HelmError, match="schema"):
        chart.render(values)
    with pytest.raises(HelmError, match="schema"):
        chart.lint(values)


def test_schema_rejects_set_string_on_the_command_line(chart: Helm) -> None:
    with pytest.raises(HelmError, match="schema"):
        chart.render(None, None, "--set-string", "config.http_port=8080")


def test_ci_values_lint_clean(chart: Helm) -> None:
    chart.lint()
    for values_file in CI_VALUES:
        chart.lint(None, "--values", str(values_file))


# --- optional resources -----------------------------------------------------------------------


def test_optional_resources_are_off_by_default(render: RenderFn) -> None:
    kinds = {d["kind"] for d in render().docs}
    assert kinds == {
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }


def test_everything_on(render: RenderFn) -> None:
    r = render({**SASL, **EVERYTHING_ON}, secret_sets())
    kinds = {d["kind"] for d in r.docs}
    assert {"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "PrometheusRule"} <= kinds
    assert "replicas" not in r.deployment["spec"]  # the HPA owns it
    assert r.one("HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    paths = [p["path"] for rule in r.one("Ingress")["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [r.env_configmap["BRIDGE_HTTP_PATH"]]


# --- dashboard and alerts (their PromQL against the real /metrics: tests/integration/test_monitoring.py)


def dashboard_configmaps(r: Rendered) -> list[dict[str, Any]]:
    return [c for c in r.of_kind("ConfigMap") if "lark-bridge.json" in (c.get("data") or {})]


def alerts(r: Rendered) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for g in r.one("PrometheusRule")["spec"]["groups"] for rule in g["rules"]}


def test_dashboard_and_alerts_are_off_by_default(render: RenderFn) -> None:
    r = render()
    assert dashboard_configmaps(r) == [] and r.of_kind("PrometheusRule") == []


def test_the_dashboard_configmap_is_labelled_for_the_grafana_sidecar(render: RenderFn) -> None:
    r = render({"grafanaDashboard": {"enabled": True, "folder": "Platform", "additionalLabels": {"team": "p"}}})
    (cm,) = dashboard_configmaps(r)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "p"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    assert cm["metadata"]["namespace"] == NAMESPACE
    dashboard = json.loads(cm["data"]["lark-bridge.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "lark-bridge.json").read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert dashboard["uid"] == "lark-bridge" and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" and p["targets"] for p in panels)
    r = render({"grafanaDashboard": {"enabled": True, "label": "dashboards", "labelValue": "lark", "namespace": "mon"}})
    (cm,) = dashboard_configmaps(r)
    assert cm["metadata"]["labels"]["dashboards"] == "lark" and cm["metadata"]["namespace"] == "mon"
    assert "annotations" not in cm["metadata"]


def test_alerts_select_this_release_and_carry_severity_and_extra_labels(render: RenderFn) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "alertLabels": {"team": "platform"},
            "severities": {"page": "page", "ticket": "ticket"},
            "extraRules": [{"alert": "Custom", "expr": "vector(1)", "labels": {"severity": "none"}}],
        }
    }
    r = render(values)
    rules = alerts(r)
    assert "LarkBridgeLongConnectionDown" not in rules  # webhook mode: that gauge is always 0
    assert rules["Custom"]["expr"] == "vector(1)"
    fullname = r.deployment["metadata"]["name"]
    for name, rule in rules.items():
        if name == "Custom":
            continue
        assert f'namespace="{NAMESPACE}", service="{fullname}"' in rule["expr"], name
        assert rule["labels"]["team"] == "platform" and rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert rules["LarkBridgeNotReady"]["labels"]["severity"] == "page"
    assert rules["LarkBridgeDeadLetters"]["labels"]["severity"] == "ticket"
    assert rules["LarkBridgeNotReady"]["for"] == "5m"
    lc = {"config": {"lark_subscription_mode": "both", "lark_app_id": "cli_a1b2"}, "prometheusRule": {"enabled": True}}
    assert "LarkBridgeLongConnectionDown" in alerts(render(lc, secret_sets()))
    assert "LarkBridgeEgressIpsStale" not in rules  # the allow-list is off by default
    on = {"config": {"lark_ip_allowlist": "report", "lark_app_id": "cli_a1b2", "lark_ip_allowlist_refresh_s": 3600}}
    stale = alerts(render({**on, "prometheusRule": {"enabled": True}}, secret_sets()))["LarkBridgeEgressIpsStale"]
    assert stale["expr"].endswith("> 7200") and "bridge_egress_ips_age_seconds" in stale["expr"]


def test_alert_thresholds_are_validated_by_the_schema(render: RenderFn) -> None:
    with pytest.raises(HelmError, match="unavailableRatio"):
        render({"prometheusRule": {"enabled": True, "unavailableRatio": 5}})
    with pytest.raises(HelmError, match="notReadyFor"):
        render({"prometheusRule": {"enabled": True, "notReadyFor": "five minutes"}})


# --- NOTES.txt --------------------------------------------------------------------------------


def notes(r: Rendered) -> str:
    (cm,) = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"] == "test-notes"]
    text: str = cm["data"]["notes"]
    return text


def test_notes_give_the_webhook_url_from_the_ingress(render: RenderFn, chart_with_notes: Path) -> None:
    values = {
        "config": {"http_path": "/lark/events"},
        "ingress": {
            "enabled": True,
            "hosts": ["bridge.example.com"],
            "tls": [{"secretName": "tls", "hosts": ["bridge.example.com"]}],
        },
    }
    text = notes(render(values, {"secrets.larkVerificationToken": "t"}, chart=chart_with_notes))
    assert "https://bridge.example.com/lark/events" in text
    assert "WARNING" in text  # bootstrap servers still 127.0.0.1


def test_notes_without_ingress_give_a_port_forward_hint(render: RenderFn, chart_with_notes: Path) -> None:
    text = notes(render(None, None, chart=chart_with_notes))
    assert "kubectl --namespace lark-test port-forward svc/t-lark-bridge" in text
    assert "/webhook/event" in text
    assert "larkVerificationToken is empty" in text


README_SHELL = {"LARK_VERIFICATION_TOKEN": "vt-readme", "LARK_ENCRYPT_KEY": "ek-readme"}


def readme_helm_commands() -> list[str]:
    """Every ``helm install|upgrade|template`` command README and docs/ show, continuation lines
    joined."""
    return shell_commands(r"helm (?:install|upgrade|template) ")


def test_readme_helm_commands_render_with_exactly_their_flags(chart: Helm) -> None:
    commands = readme_helm_commands()
    assert len(commands) >= 3, "README and docs/ show fewer helm commands: keep this test in step"
    for command in commands:
        words = shlex.split(command, posix=True)
        assert words[3] == "helm/lark-bridge"
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        assert sets and len(sets) * 2 == len(words) - 4, f"only --set flags are checked here: {command}"
        # Shell variables stand for the user's secrets: give each a value, keep the rest verbatim.
        args = [a for s in sets for a in ("--set", re.sub(r"\$(\w+)", lambda m: README_SHELL[m[1]], s))]
        rendered = chart.render(None, None, *args)
        env = container_environment(rendered)
        assert env["BRIDGE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092"
        kinds = {d["kind"] for d in rendered.docs}
        assert ("ServiceMonitor" in kinds) == ("serviceMonitor.enabled=true" in sets)
        assert ("PrometheusRule" in kinds) == ("prometheusRule.enabled=true" in sets)
        assert bool(dashboard_configmaps(rendered)) == ("grafanaDashboard.enabled=true" in sets)
        assert env["BRIDGE_LARK_VERIFICATION_TOKEN"] == "vt-readme" and env["BRIDGE_LARK_ENCRYPT_KEY"] == "ek-readme"
        assert load_settings(env).kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_the_long_connection_needs_no_ingress_and_takes_its_secret_from_the_secret(render: RenderFn) -> None:
    lc = {"config": {"lark_subscription_mode": "long_connection", "lark_app_id": "cli_a1b2"}}
    r = render({**EVERYTHING_ON, **lc}, secret_sets())
    assert r.of_kind("Ingress") == []  # no inbound traffic for events; probes and metrics stay
    assert r.of_kind("Service") and r.env_configmap["BRIDGE_LARK_SUBSCRIPTION_MODE"] == "long_connection"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in r.container["env"] if "valueFrom" in e}
    assert refs["BRIDGE_LARK_APP_SECRET"] == "lark-app-secret"
    assert len(render(EVERYTHING_ON, secret_sets()).of_kind("Ingress")) == 1


# --- CloudEvents content modes -----------------------------------------------------------------


def test_content_modes_reach_the_bridge(render: RenderFn) -> None:
    config = {
        "cloudevents_mode": "binary",
        "cloudevents_mode_overrides": "lark.bridge.dead_letter=structured, lark.vc.room.created_v1=binary",
    }
    r = render({"config": config}, {"secrets.larkVerificationToken": "t"})
    modes = load_settings(container_environment(r)).cloudevents_modes()
    assert modes["lark.bridge.dead_letter"] == "structured"
    assert {t for t, m in modes.items() if m == "binary"} == set(modes) - {"lark.bridge.dead_letter"}


@pytest.mark.parametrize(
    "config",
    [
        {"cloudevents_mode": "avro"},
        {"cloudevents_mode_overrides": "lark.vc.room.created_v1=avro"},
        {"cloudevents_mode_overrides": "lark.vc.room.created_v1"},
    ],
)
def test_the_schema_refuses_a_bad_content_mode(render: RenderFn, config: dict[str, str]) -> None:
    with pytest.raises(HelmError, match="cloudevents_mode"):
        render({"config": config}, {"secrets.larkVerificationToken": "t"})


def test_the_ip_allowlist_renders_as_the_bridge_reads_it(render: RenderFn) -> None:
    # "off" is a YAML 1.1 boolean when unquoted: the default must still reach the bridge as text.
    env = container_environment(render(None, {"secrets.larkVerificationToken": "t"}))
    assert env["BRIDGE_LARK_IP_ALLOWLIST"] == "off" and env["BRIDGE_HTTP_TRUSTED_PROXY_HOPS"] == "0"
    assert load_settings(env).lark_ip_allowlist == "off"
    on = {"config": {"lark_ip_allowlist": "enforce", "lark_app_id": "cli_a1b2", "http_trusted_proxy_hops": 1}}
    env = container_environment(render(on, {"secrets.larkVerificationToken": "t", "secrets.larkAppSecret": "s"}))
    settings = load_settings(env)
    assert (settings.lark_ip_allowlist, settings.http_trusted_proxy_hops) == ("enforce", 1)
    assert settings.lark_ip_allowlist_refresh_s == 21_600
    with pytest.raises(HelmError, match="lark_ip_allowlist"):
        render({"config": {"lark_ip_allowlist": "on"}})
