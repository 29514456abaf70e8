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


class BasicAuthGate:
    """A reverse proxy in front of a real registry that demands HTTP basic auth, as hosted
    registries do (Apicurio's in-memory mode has none): a request with ``Authorization: Basic
    user:password`` is forwarded to ``target``, any other is answered 401 in the registry's error
    format. Start with ``await gate.start()``; ``url`` is its base URL; stop with ``await gate.close()``."""

    def __init__(self, target: str, user: str, password: str) -> None:
        import aiohttp
        from aiohttp import web

        self._target = target.rstrip("/")
        self._expected = aiohttp.encode_basic_auth(user, password)
        self._app = web.Application()
        self._app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(self._app)
        self.url = ""

    async def start(self) -> None:
        from aiohttp import web

        from bridge_devtools.broker import free_port

        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web

        if request.headers.get("Authorization") != self._expected:
            return web.json_response({"error_code": 40101, "message": "Unauthorized"}, status=401)
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self._target + "/" + request.match_info["tail"],
                params=request.query,
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", CONTENT_TYPE)},
            ) as resp:
                return web.Response(body=await resp.read(), status=resp.status, content_type=resp.content_type)
