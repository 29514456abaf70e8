"""The project's schema registry launcher (bridge_devtools.registry): an Apicurio Registry on
127.0.0.1 serves the Confluent-compatible API with a BACKWARD global rule, and stops.

Needs Java 21+ and, on first use, Maven to fetch the registry (like the broker tests, never skipped).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from bridge_devtools.registry import LocalRegistry
from tests.support.registry import call

pytestmark = pytest.mark.integration

# Draft-07: the JSON Schema dialect whose compatibility checks the registry implements.
PROPERTIES: dict[str, Any] = {"id": {"type": "string"}, "n": {"type": "integer"}}
SCHEMA_V1: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": PROPERTIES,
    "required": ["id"],
}


def test_registry_registers_reads_back_and_stops() -> None:
    registry = LocalRegistry()
    try:
        registry.start(timeout_s=120)
        assert registry.is_running()
        assert registry.pid is not None
        url = registry.url
        assert url == f"http://127.0.0.1:{registry.port}/apis/ccompat/v7"

        status, body = call("GET", f"{url}/config")
        assert (status, body) == (200, {"compatibilityLevel": "BACKWARD"})

        schema = json.dumps(SCHEMA_V1)
        status, body = call("POST", f"{url}/subjects/t-value/versions", {"schemaType": "JSON", "schema": schema})
        assert status == 200, body
        schema_id = body["id"]
        assert isinstance(schema_id, int)

        status, body = call("GET", f"{url}/schemas/ids/{schema_id}")
        assert status == 200, body
        assert body["schemaType"] == "JSON"
        assert json.loads(body["schema"]) == SCHEMA_V1

        # Registering the same schema again returns the same id; a new required property breaks
        # BACKWARD (old records lack it), so the registry refuses it with 409.
        status, body = call("POST", f"{url}/subjects/t-value/versions", {"schemaType": "JSON", "schema": schema})
        assert (status, body) == (200, {"id": schema_id})
        v2 = {**SCHEMA_V1, "properties": {**PROPERTIES, "k": {"type": "string"}}, "required": ["id", "k"]}
        status, body = call(
            "POST",
            f"{url}/compatibility/subjects/t-value/versions/latest",
            {"schemaType": "JSON", "schema": json.dumps(v2)},
        )
        assert (status, body) == (200, {"is_compatible": False})
        status, body = call(
            "POST", f"{url}/subjects/t-value/versions", {"schemaType": "JSON", "schema": json.dumps(v2)}
        )
        assert status == 409, body

        registry.stop()
        assert not registry.is_running()
        assert registry.pid is None
        assert not (registry.state_dir / "url").exists()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", registry.port), timeout=2):
            pass
    finally:
        registry.cleanup()
    assert not registry.state_dir.exists()
