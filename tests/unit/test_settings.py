"""Settings: defaults, exit code 2 naming the variable, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bridge.__main__ import settings_help
from bridge.settings import Settings, SettingsError, load_settings, setting_docs

SECRET_TOKEN = "vt-very-secret-0001"
SECRET_KEY = "ek-very-secret-0002"


def test_defaults() -> None:
    s = load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN})
    assert (s.http_host, s.http_port, s.http_path, s.http_max_body_bytes) == ("0.0.0.0", 8080, "/webhook/event", 1 << 20)
    assert s.lark_max_signature_age_s == 28800 and s.encrypt_keys == ()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092" and s.kafka_publish_timeout_s == 2.0
    assert s.dedup_ttl_s == 86400 and s.dedup_max_entries == 1_000_000
    assert s.topic_dead_letter == "lark.bridge.dead_letter"


def test_secrets_masked_in_repr() -> None:
    s = load_settings(
        {"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN, "BRIDGE_LARK_ENCRYPT_KEY": SECRET_KEY}
    )
    for text in (repr(s), str(s), str(s.model_dump())):
        assert SECRET_TOKEN not in text and SECRET_KEY not in text
    assert s.encrypt_keys == (SECRET_KEY,)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "BRIDGE_LARK_VERIFICATION_TOKEN"),
        ({"BRIDGE_HTTP_PORT": "eighty"}, "BRIDGE_HTTP_PORT"),
        ({"BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "5"}, "BRIDGE_KAFKA_PUBLISH_TIMEOUT_S"),
        ({"BRIDGE_KAFKA_COMPRESSION": "brotli"}, "BRIDGE_KAFKA_COMPRESSION"),
        ({"BRIDGE_DEDUP_TTL_S": "3600"}, "BRIDGE_DEDUP_TTL_S"),
        ({"BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS": SECRET_KEY}, "BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS"),
        ({"BRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "BRIDGE_KAFKA_SASL_MECHANISM"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    full = {"BRIDGE_LARK_VERIFICATION_TOKEN": SECRET_TOKEN, **env} if variable != "BRIDGE_LARK_VERIFICATION_TOKEN" else env
    with pytest.raises(SettingsError) as info:
        load_settings(full)
    assert variable in str(info.value)
    assert SECRET_TOKEN not in str(info.value) and SECRET_KEY not in str(info.value)


def test_serve_exits_2_with_message_and_no_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(BRIDGE_LARK_VERIFICATION_TOKEN=SECRET_TOKEN, BRIDGE_LARK_ENCRYPT_KEY=SECRET_KEY, BRIDGE_HTTP_PORT="99999")
    proc = subprocess.run([sys.executable, "-m", "bridge", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "BRIDGE_HTTP_PORT" in proc.stderr
    assert SECRET_TOKEN not in proc.stderr + proc.stdout and SECRET_KEY not in proc.stderr + proc.stdout


def test_help_lists_every_setting_with_its_default() -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    for row in setting_docs():
        assert f"{row.env}  (default: {row.default})" in out
    assert len(setting_docs()) == len(Settings.model_fields)
    assert settings_help() in out
