"""schemas/: checked-in files equal what the models generate; examples and samples validate;
published files never change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bridge import envelope as ev
from bridge import schemas
from bridge.decode import decode
from bridge.errors import DeadLetterCause
from bridge.inbound import read_inbound
from bridge.normalize import Topics, dead_letter, normalize
from bridge.samples import SAMPLE_TYPES, sample
from bridge_devtools.platform import compact
from tests.support.schemas import SCHEMAS_DIR, validator

ROOT = SCHEMAS_DIR
TOPICS = Topics.from_names(
    room_created="a",
    room_updated="a.room_updated",
    room_deleted="a.room_deleted",
    room_level_created="a.level_created",
    room_level_updated="a.level_updated",
    room_level_deleted="a.level_deleted",
    reserve_config_updated="b",
    third_party="c",
    dead_letter="d",
)


def test_checked_in_files_equal_generated() -> None:
    assert schemas.check(ROOT) == [], "run: python -m bridge schemas write"


def test_check_detects_drift(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert schemas.check(tmp_path) == []
    target = tmp_path / "envelope/v1/vc.room.created_v1.schema.json"
    target.write_text(target.read_text().replace('"minLength": 1', '"minLength": 2', 1))
    assert schemas.check(tmp_path) == ["envelope/v1/vc.room.created_v1.schema.json"]


def test_published_files_never_change() -> None:
    lines = (ROOT / "PUBLISHED.sha256").read_text().split("\n")
    locked = {name: digest for digest, name in (line.split("  ", 1) for line in lines if line.strip())}
    on_disk = {"./" + str(p.relative_to(ROOT)) for p in ROOT.rglob("*.schema.json")}
    assert set(locked) == on_disk, "a new schema version must be added to PUBLISHED.sha256 when released"
    for rel, digest in locked.items():
        assert hashlib.sha256((ROOT / rel).read_bytes()).hexdigest() == digest, (
            f"{rel} was published; make a new version"
        )


@pytest.mark.parametrize("lark_type", ev.LARK_TYPES)
def test_examples_validate(lark_type: str) -> None:
    v = validator(f"envelope/v1/{lark_type}.schema.json")
    examples = json.loads((ROOT / f"envelope/v1/examples/{lark_type}.json").read_text())
    assert examples
    for example in examples:
        v.validate(example)
        assert isinstance(v.schema, dict) and example["dataschema"] == v.schema["properties"]["dataschema"]["const"]


def test_dead_letter_example_validates() -> None:
    v = validator("dead_letter/v1/dead_letter.schema.json")
    for example in json.loads((ROOT / "dead_letter/v1/examples/dead_letter.json").read_text()):
        v.validate(example)


@pytest.mark.parametrize("kind", SAMPLE_TYPES)
def test_normalized_samples_validate_and_schema_rejects_wrong_types(kind: str) -> None:
    body = sample(kind)
    auth = read_inbound(compact(body))
    recs = normalize(decode(auth), TOPICS)
    for rec in recs:
        env = json.loads(rec.value)
        v = validator(f"envelope/v1/{env['type']}.schema.json")
        v.validate(env)
        for bad in ({**env, "envelopeversion": "1"}, {**env, "time": "yesterday"}, {**env, "type": "other"}):
            assert not v.is_valid(bad)


def test_dead_letter_records_validate() -> None:
    v = validator("dead_letter/v1/dead_letter.schema.json")
    body = sample("vc.room.created_v1")
    body["header"]["event_type"] = "im.message.receive_v1"
    auth = read_inbound(compact(body))
    with pytest.raises(DeadLetterCause) as info:
        decode(auth)
    v.validate(json.loads(dead_letter(auth, info.value, received_ms=1, topics=TOPICS).value))


#: The room and room-level kinds (docs/protocol.md §9.4-§9.8) and, for each, a sibling kind whose
#: ``data`` their schema must refuse.
NEW_KINDS = {
    ev.ROOM_UPDATED: ev.ROOM_LEVEL_UPDATED,
    ev.ROOM_DELETED: ev.ROOM_UPDATED,
    ev.ROOM_LEVEL_CREATED: ev.ROOM_CREATED,
    ev.ROOM_LEVEL_UPDATED: ev.ROOM_LEVEL_DELETED,
    ev.ROOM_LEVEL_DELETED: ev.ROOM_LEVEL_CREATED,
}


def _envelope(body: dict[str, object]) -> dict[str, object]:
    [rec] = normalize(decode(read_inbound(compact(body))), TOPICS)
    env: dict[str, object] = json.loads(rec.value)
    return env


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_the_new_schemas_take_their_records_with_unmodelled_fields_and_refuse_other_shapes(kind: str) -> None:
    v = validator(f"envelope/v1/{kind}.schema.json")
    body = sample(kind)
    body["event"]["floor"] = {"name": "3F"}  # a field the platform may add tomorrow
    env = _envelope(body)
    v.validate(env)
    assert env["data"]["_unmodelled"] == {"/event/floor": {"name": "3F"}}  # type: ignore[index]
    other = _envelope(sample(NEW_KINDS[kind]))
    assert not v.is_valid({**env, "data": other["data"]})  # closed content model
    assert not v.is_valid({**other, "type": kind, "dataschema": ev.dataschema_id(kind)})
