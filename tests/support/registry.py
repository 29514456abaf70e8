"""Talking to a schema registry's Confluent-compatible API (integration tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Final

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One request to the registry; returns (status, decoded JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
