"""The evolution gate, on a real schema registry (Apicurio, BACKWARD): the published schemas
register, the schemas the models generate now are accepted after them, a compatible change (a
new optional field) is accepted and a breaking one (a field removed or retyped) is refused.
The project's own guard against breaking its consumers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bridge import schemas
from bridge_devtools.registry import LocalRegistry
from tests.support.registry import call

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def published() -> dict[str, str]:
    """``{path under schemas/: content}`` of every file locked in PUBLISHED.sha256."""
    lines = (SCHEMAS / "PUBLISHED.sha256").read_text().splitlines()
    rels = [line.split("  ", 1)[1].removeprefix("./") for line in lines if line.strip()]
    return {rel: (SCHEMAS / rel).read_text(encoding="utf-8") for rel in rels}


def subject(rel: str) -> str:
    """A subject per file: ``<stem>-value``, ``<stem>.data-value`` for a ``data`` schema (the
    value of a binary-mode topic), which has the same stem as its envelope's."""
    stem = Path(rel).name.removesuffix(".schema.json")
    return f"{stem}.data-value" if Path(rel).parent.name == "data" else f"{stem}-value"


def check(url: str, rel: str, schema: dict[str, Any]) -> tuple[int, Any]:
    body = {"schemaType": "JSON", "schema": json.dumps(schema)}
    return call("POST", f"{url}/compatibility/subjects/{subject(rel)}/versions/latest", body)


@pytest.mark.parametrize("rel", sorted(published()))
def test_published_then_current_is_accepted_and_a_breaking_change_is_refused(registry: LocalRegistry, rel: str) -> None:
    url = registry.url
    status, body = call(
        "POST", f"{url}/subjects/{subject(rel)}/versions", {"schemaType": "JSON", "schema": published()[rel]}
    )
    assert status == 200 and isinstance(body["id"], int), body
    current = json.loads(schemas.generated_files()[rel])
    assert check(url, rel, current) == (200, {"is_compatible": True})

    with_optional = copy.deepcopy(current)  # a new optional attribute: compatible in a closed model
    with_optional["properties"]["tomorrowsfield"] = {"type": "string"}
    assert check(url, rel, with_optional) == (200, {"is_compatible": True})

    # an envelope's attribute, or a data schema's first required field
    name = "time" if "time" in current["properties"] else current["required"][0]
    removed = copy.deepcopy(current)  # a required attribute removed
    del removed["properties"][name]
    removed["required"].remove(name)
    assert check(url, rel, removed) == (200, {"is_compatible": False})

    retyped = copy.deepcopy(current)  # an attribute's type changed
    retyped["properties"]["id" if "id" in current["properties"] else name] = {"type": "integer"}
    assert check(url, rel, retyped) == (200, {"is_compatible": False})
