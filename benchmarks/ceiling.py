"""The ceiling: a minimal aiohttp app that reads the body and answers 200.

``python -m benchmarks.ceiling PORT`` (host 127.0.0.1, any path). What the HTTP framework alone can
do on one core, with the bridge's framework, event loop (the default asyncio loop) and response
shape (``{"msg":"success"}``, ``application/json``), and no access log (the bridge has none).
"""

from __future__ import annotations

import sys

from aiohttp import web

_OK = b'{"msg":"success"}'


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_OK, content_type="application/json", charset="utf-8")


def main(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
