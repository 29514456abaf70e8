"""Readiness probe for the registry over HTTP (standard library :mod:`urllib`).

* ``GET http://127.0.0.1:<management_port>/health/ready`` — SmallRye Health (MicroProfile
  Health) on Quarkus's management interface, 200 with ``{"status": "UP", ...}`` once the storage
  and the REST layer are ready; 503 (``"DOWN"``) before. Not served on the main port (404 there).
  https://quarkus.io/guides/smallrye-health and https://quarkus.io/guides/management-interface-reference
* ``GET http://127.0.0.1:<port>/apis/registry/v3/system/info`` — ``{"name": "Apicurio Registry
  (SQL)", "version": "3.3.3", ...}``, identifies the server (a foreign one squatting the port is
  detected); Apicurio Registry's core REST API v3, https://www.apicur.io/registry/docs/
* ``GET http://127.0.0.1:<port>/apis/ccompat/v7/config`` — the Confluent-compatible global
  compatibility level, ``{"compatibilityLevel": "BACKWARD"}``.
  https://docs.confluent.io/platform/current/schema-registry/develop/api.html#config
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, NamedTuple

#: Path of the Confluent Schema Registry compatible API (API v7) on the main port.
CCOMPAT_PATH = "/apis/ccompat/v7"


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """``GET`` *url* (``Accept: application/json``) and return ``(status, decoded body or None)``.

    HTTP error statuses are returned, not raised.

    :param timeout_s: socket timeout for connect and read, in seconds.
    :raises OSError: not reachable (connection refused, timeout, reset).
    """
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (http:// URL we build)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            status, body = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


class ProbeResult(NamedTuple):
    """What :func:`probe` learned from a registry that reported itself ready."""

    #: ``name`` from ``/apis/registry/v3/system/info``, e.g. ``"Apicurio Registry (SQL)"``.
    name: str
    #: ``version`` from the same, e.g. ``"3.3.3"``.
    version: str
    #: ``compatibilityLevel`` from ``/apis/ccompat/v7/config``, e.g. ``"BACKWARD"``.
    compatibility: str


def probe(host: str, port: int, management_port: int, timeout_s: float = 2.0) -> ProbeResult | None:
    """Ask the registry whether it is ready, then who it is and its global compatibility level.

    :param port: the main HTTP port (REST APIs).
    :param management_port: Quarkus's management port (``/health/ready``).
    :param timeout_s: socket timeout for connect and each read, in seconds (per request).
    :returns: the server's name, version and compatibility level once ``/health/ready`` says
        ``UP``, or ``None`` if it is not reachable or not ready yet.
    """
    try:
        status, health = get_json(f"http://{host}:{management_port}/health/ready", timeout_s)
        if status != 200 or not isinstance(health, dict) or health.get("status") != "UP":
            return None
        status, info = get_json(f"http://{host}:{port}/apis/registry/v3/system/info", timeout_s)
        if status != 200 or not isinstance(info, dict):
            return None
        status, config = get_json(f"http://{host}:{port}{CCOMPAT_PATH}/config", timeout_s)
        if status != 200 or not isinstance(config, dict):
            return None
    except OSError:
        return None
    return ProbeResult(str(info.get("name", "")), str(info.get("version", "")), str(config.get("compatibilityLevel")))
