"""HTTP answers shared by the app's routes and the webhook ingress (aiohttp only, no app state),
so that neither imports the other for them."""

from __future__ import annotations

import msgspec
from aiohttp import web

_json = msgspec.json.Encoder()


def json_answer(body: dict[str, str], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response, UTF-8.

    Args:
        body: the JSON object to send (string values only: the bridge's answers are fixed texts).
        status: the HTTP status (default 200).
        headers: extra response headers (e.g. ``Retry-After``), or None.

    Returns:
        The response, ``Content-Type: application/json; charset=utf-8``.
    """
    return web.Response(
        body=_json.encode(body), status=status, content_type="application/json", charset="utf-8", headers=headers
    )
