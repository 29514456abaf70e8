"""The ceiling: a minimal aiohttp app that reads the body and answers 200.

``python -m benchmarks.ceiling PORT`` (host 127.0.0.1, any path). What the HTTP framework alone can
do on one core, with the bridge's framework, event loop (``BRIDGE_EVENT_LOOP`` as the bridge reads
it: uvloop by default; ``bridge.server.loop_factory``) and response shape (``{"msg":"success"}``,
``application/json``), listen backlog, and no access log (the bridge has none).
"""

from __future__ import annotations

import os
import sys

from aiohttp import web

from bridge.server import LISTEN_BACKLOG, loop_factory
from bridge.settings import EventLoop, Settings

_OK = b'{"msg":"success"}'


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_OK, content_type="application/json", charset="utf-8")


def main(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    kind = EventLoop(os.environ.get("BRIDGE_EVENT_LOOP") or Settings.model_fields["event_loop"].default)
    loop = loop_factory(kind)()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop, backlog=LISTEN_BACKLOG)


if __name__ == "__main__":
    main(int(sys.argv[1]))
