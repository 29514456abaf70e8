"""The webhook's error mapper (bridge.ingress.webhook.map_error): every error of the tree to its
status, outcome, fixed body and headers (docs/architecture.md, "Errors, and where they become HTTP")."""

from __future__ import annotations

import pytest

from bridge.errors import (
    AuthenticationError,
    BadRequest,
    BodyTooLarge,
    ClientDisconnected,
    PublishFailed,
    RequestTimeout,
    Unavailable,
    UnsupportedEncoding,
)
from bridge.ingress.webhook import INTERNAL_ERROR, ErrorAnswer, map_error


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (BadRequest("not_json"), ErrorAnswer(400, "bad_request", {"msg": "bad request"})),
        (RequestTimeout(), ErrorAnswer(408, "timeout", {"msg": "request timeout"})),
        (BodyTooLarge(), ErrorAnswer(413, "too_large", {"msg": BodyTooLarge.message})),
        (UnsupportedEncoding(), ErrorAnswer(415, "unsupported_encoding", {"msg": UnsupportedEncoding.message})),
        (ClientDisconnected(), ErrorAnswer(499, "client_disconnected", {"msg": ClientDisconnected.message})),
        (
            AuthenticationError("signature_mismatch"),
            ErrorAnswer(401, "unauthorized", {"msg": AuthenticationError.message}),
        ),
        (
            Unavailable("shutting_down", retry_after_s=5),
            ErrorAnswer(503, "unavailable", {"msg": Unavailable.message}, {"Retry-After": "5"}),
        ),
        (
            PublishFailed((0,)),
            ErrorAnswer(
                503,
                "unavailable",
                {"msg": PublishFailed.message},
                {"Retry-After": str(PublishFailed((0,)).retry_after_s)},
            ),
        ),
        (RuntimeError("secret detail"), INTERNAL_ERROR),
        (KeyError("x"), ErrorAnswer(500, "error", {"msg": "internal error"})),
    ],
)
def test_each_error_maps_to_its_answer(exc: Exception, expected: ErrorAnswer) -> None:
    assert map_error(exc) == expected


def test_the_body_never_carries_the_error_s_own_text() -> None:
    assert "secret" not in repr(map_error(RuntimeError("secret detail")))
    assert "signature_mismatch" not in repr(map_error(AuthenticationError("signature_mismatch")))
