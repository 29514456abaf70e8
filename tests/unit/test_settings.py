"""Settings: defaults, exit code 2 naming the variable, secrets never shown."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import structlog

from bridge.__main__ import settings_help
from bridge.logs import warn_unknown_variables
from bridge.settings import (
    Settings,
    SettingsError,
    deprecated_variables,
    load_settings,
    setting_docs,
    unknown_variables,
)
from bridge_devtools.broker import free_port
from tests.support.processes import bridge_env

SECRET_TOKEN = "vt-very-secret-0001"
SECRET_KEY = "ek-very-secret-0002"


def test_defaults() -> None:
    s = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN})
    assert (s.http_host, s.http_port, s.http_path, s.http_max_body_bytes) == (
        "0.0.0.0",
        8080,
        "/webhook/event",
        1 << 20,
    )
    assert s.lark_max_signature_age_s == 28800 and s.encrypt_keys == ()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092" and s.answer_deadline_s == 2.0
    assert s.dedup_ttl_s == 86400 and s.dedup_max_entries == 1_000_000
    assert s.topic_dead_letter == "lark.bridge.dead_letter"


def test_secrets_masked_in_repr() -> None:
    s = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN, "BRIDGE_LARK_ENCRYPT_KEY": SECRET_KEY})
    for text in (repr(s), str(s), str(s.model_dump())):
        assert SECRET_TOKEN not in text and SECRET_KEY not in text
    assert s.encrypt_keys == (SECRET_KEY,)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "BRIDGE_LARK_VERIFICATION_TOKEN"),
        ({"BRIDGE_HTTP_PORT": "eighty"}, "BRIDGE_HTTP_PORT"),
        ({"BRIDGE_ANSWER_DEADLINE_S": "5"}, "BRIDGE_ANSWER_DEADLINE_S"),
        ({"BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "5"}, "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S"),  # the old name, as set
        ({"BRIDGE_KAFKA_COMPRESSION": "brotli"}, "BRIDGE_KAFKA_COMPRESSION"),
        ({"BRIDGE_DEDUP_TTL_S": "3600"}, "BRIDGE_DEDUP_TTL_S"),
        ({"BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS": SECRET_KEY}, "BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS"),
        ({"BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "BRIDGE_KAFKA_SASL_MECHANISM"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    full = (
        {"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN, **env} if variable != "BRIDGE_LARK_VERIFICATION_TOKEN" else env
    )
    with pytest.raises(SettingsError) as info:
        load_settings(full)
    assert variable in str(info.value)
    assert SECRET_TOKEN not in str(info.value) and SECRET_KEY not in str(info.value)


def test_serve_exits_2_with_message_and_no_secret() -> None:
    env = bridge_env(
        BRIDGE_LARK_VERIFICATION_TOKEN=SECRET_TOKEN, BRIDGE_LARK_ENCRYPT_KEY=SECRET_KEY, BRIDGE_HTTP_PORT="99999"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "BRIDGE_HTTP_PORT" in proc.stderr
    assert SECRET_TOKEN not in proc.stderr + proc.stdout and SECRET_KEY not in proc.stderr + proc.stdout


def test_help_lists_every_setting_with_its_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for row in setting_docs():
        assert f"{row.env}  (default: {row.default})" in out
    assert len(setting_docs()) == len(Settings.model_fields)
    assert settings_help() in out


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("BRIDGE_LARK_ENCRYPT_KEY", SECRET_KEY)
    monkeypatch.setenv("BRIDGE_HTTP_PORT", "not-a-port")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BRIDGE_KAFKA_CLIENT_ID=from-dotenv\n")
    s = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN})
    assert s.encrypt_keys == () and s.http_port == 8080 and s.kafka_client_id == "lark-bridge"
    with pytest.raises(SettingsError, match="BRIDGE_HTTP_PORT"):
        load_settings()  # the default mapping is os.environ: the bad port there is read and refused


def test_unknown_variables_name_the_closest_setting_and_skip_service_links() -> None:
    env = {
        "BRIDGE_KAFKA_BOOTSTRAP_SERVER": "kafka:9092",
        "bridge_http_port": "1",  # a known one, any case
        "BRIDGE_ZZZ": "1",
        "BRIDGE_LARK_BRIDGE_SERVICE_HOST": "10.0.0.1",
        "BRIDGE_LARK_BRIDGE_PORT_8080_TCP_ADDR": "10.0.0.1",
        "BRIDGE_PORT": "tcp://10.0.0.1:8080",
        "OTHER": "x",
    }
    assert unknown_variables(env) == [
        ("BRIDGE_KAFKA_BOOTSTRAP_SERVER", "BRIDGE_KAFKA_BOOTSTRAP_SERVERS"),
        ("BRIDGE_ZZZ", None),
    ]


def test_serve_warns_about_a_stray_variable_at_start_and_still_starts() -> None:
    env = bridge_env(
        BRIDGE_LARK_VERIFICATION_TOKEN=SECRET_TOKEN,
        BRIDGE_HTTP_HOST="127.0.0.1",
        BRIDGE_HTTP_PORT=str(free_port()),
        BRIDGE_KAFKA_BOOTSTRAP_SERVER="kafka-typo:9092",
        BRIDGE_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve"], env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if "listening on" in line:
                    break
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    warning = [json.loads(x) for x in lines if "unknown setting variable" in x]
    assert warning and warning[0]["variable"] == "BRIDGE_KAFKA_BOOTSTRAP_SERVER"
    assert warning[0]["did_you_mean"] == "BRIDGE_KAFKA_BOOTSTRAP_SERVERS" and warning[0]["level"] == "warning"
    assert "kafka-typo" not in "".join(lines)  # names only, never values


def test_the_ingress_decides_which_credentials_are_required() -> None:
    lc = {
        "BRIDGE_LARK_SUBSCRIPTION_MODE": "long_connection",
        "BRIDGE_LARK_APP_ID": "cli_a1",
        "BRIDGE_LARK_APP_SECRET": "s-1f",
    }
    s = load_settings(lc)  # no verification token needed without the webhook
    assert s.long_connection_enabled and not s.webhook_enabled and s.lark_verification_token is None
    assert "s-1f" in s.secret_values() and "s-1f" not in repr(s)
    with pytest.raises(SettingsError, match="BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET"):
        load_settings({**lc, "BRIDGE_LARK_APP_SECRET": ""})
    with pytest.raises(SettingsError, match="BRIDGE_LARK_VERIFICATION_TOKEN is required"):
        load_settings({**lc, "BRIDGE_LARK_SUBSCRIPTION_MODE": "both"})
    with pytest.raises(SettingsError, match="BRIDGE_LARK_VERIFICATION_TOKEN is required"):
        load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": ""})  # Helm's "unset", with the webhook
    with pytest.raises(SettingsError, match="BRIDGE_LARK_DOMAIN"):
        load_settings({**lc, "BRIDGE_LARK_DOMAIN": "open.feishu.cn"})
    both = load_settings({**lc, "BRIDGE_LARK_SUBSCRIPTION_MODE": "both", "BRIDGE_LARK_VERIFICATION_TOKEN": "t"})
    assert both.webhook_enabled and both.long_connection_enabled


@pytest.mark.parametrize("mode", ["enforce", "report"])
def test_the_ip_allowlist_needs_the_app_credentials(mode: str) -> None:
    base = {"BRIDGE_LARK_VERIFICATION_TOKEN": "t", "BRIDGE_LARK_IP_ALLOWLIST": mode}
    with pytest.raises(
        SettingsError, match=f"BRIDGE_LARK_APP_SECRET are required with BRIDGE_LARK_IP_ALLOWLIST={mode}"
    ):
        load_settings(base)
    with pytest.raises(SettingsError, match="BRIDGE_LARK_APP_ID and"):
        load_settings({**base, "BRIDGE_LARK_APP_ID": "cli_a1", "BRIDGE_LARK_APP_SECRET": ""})
    s = load_settings({**base, "BRIDGE_LARK_APP_ID": "cli_a1", "BRIDGE_LARK_APP_SECRET": "s-2f"})
    assert s.lark_ip_allowlist == mode and s.lark_ip_allowlist_refresh_s == 21_600
    assert s.http_trusted_proxy_hops == 0
    off = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": "t"})
    assert off.lark_ip_allowlist == "off"  # the default needs nothing
    with pytest.raises(SettingsError, match="BRIDGE_LARK_IP_ALLOWLIST"):
        load_settings({**base, "BRIDGE_LARK_IP_ALLOWLIST": "on"})
    with pytest.raises(SettingsError, match="BRIDGE_HTTP_TRUSTED_PROXY_HOPS"):
        load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": "t", "BRIDGE_HTTP_TRUSTED_PROXY_HOPS": "-1"})
    with pytest.raises(SettingsError, match="BRIDGE_LARK_IP_ALLOWLIST_REFRESH_S"):
        load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": "t", "BRIDGE_LARK_IP_ALLOWLIST_REFRESH_S": "10"})


def test_a_renamed_variable_is_still_read_under_its_old_name_unless_the_new_one_is_set() -> None:
    base = {"BRIDGE_LARK_VERIFICATION_TOKEN": "t"}
    assert load_settings({**base, "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "1.5"}).answer_deadline_s == 1.5
    both = {**base, "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "1.5", "BRIDGE_ANSWER_DEADLINE_S": "2.5"}
    assert load_settings(both).answer_deadline_s == 2.5
    assert unknown_variables(both) == []  # not a typo: deprecated_variables() names it
    assert deprecated_variables(both) == [("BRIDGE_KAFKA_PUBLISH_TIMEOUT_S", "BRIDGE_ANSWER_DEADLINE_S")]
    assert deprecated_variables(base) == []


def test_serve_warns_once_per_deprecated_variable_naming_the_new_one() -> None:
    env = {"BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "1.5", "BRIDGE_ANSWER_DEADLINE_S": "2.5"}
    with structlog.testing.capture_logs() as logs:
        assert warn_unknown_variables(env) == 0
    [line] = logs
    assert line["event"] == "deprecated setting variable" and line["log_level"] == "warning"
    assert line["variable"] == "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S" and line["use_instead"] == "BRIDGE_ANSWER_DEADLINE_S"
    assert line["ignored_because_set"] is True and "1.5" not in repr(line)
