"""JSON Schemas (draft-07) of envelope v1 and the dead-letter record, generated from the models.

Shaped for schema registries (Confluent's, Apicurio's), which check compatibility between
versions: the draft-07 dialect (Apicurio's checker knows drafts 4/6/7 only and answers 500 for
2020-12), no ``$id`` (a ``urn:`` one breaks its ``$ref`` resolution; the ``dataschema`` constant
names the schema instead), ``definitions`` for the nested models, and a **closed content model**
(``additionalProperties: false`` on every modelled object): under a registry's BACKWARD rule a
new optional field is then a compatible change and a removed or retyped one is not — the
versioning policy of docs/envelope.md. Free-form objects (``data._unmodelled``, a dead letter's
``payload``) stay open.

``python -m bridge schemas write`` writes them (and the examples) under ``schemas/``;
``python -m bridge schemas check`` exits 1 when the checked-in files differ from what the models
generate. Layout::

    schemas/envelope/v1/<lark type>.schema.json      one per Lark event type
    schemas/envelope/v1/third_party_meeting_room_event.schema.json
                                                     the third-party topic's: its three types
    schemas/envelope/v1/examples/<lark type>.json    the normalized documented sample(s)
    schemas/envelope/v1/data/<lark type>.schema.json ``data`` alone: a binary-mode record's value
    schemas/envelope/v1/data/third_party_meeting_room_event.schema.json
                                                     the three third-party types' (one shape)
    schemas/dead_letter/v1/dead_letter.schema.json
    schemas/dead_letter/v1/examples/dead_letter.json
    schemas/dead_letter/v1/data/dead_letter.schema.json
    schemas/PUBLISHED.sha256                         hashes of released files (never change)

A topic in CloudEvents binary content mode (``BRIDGE_CLOUDEVENTS_MODE``) has ``data`` alone as
its record value, so its schema (:func:`topic_schema` with ``binary=True``) is the ``data``
schema; the record's ``ce_dataschema`` header still names the envelope schema, as in
structured mode (the attribute is the same in both modes), whose ``data`` is this schema.

Versioning policy: docs/envelope.md, "Schemas and versioning"; the registry: docs/registry.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import msgspec

from bridge import envelope as ev

#: The ``$schema`` of every generated schema: JSON Schema draft-07.
DRAFT: Final = "http://json-schema.org/draft-07/schema#"


def _draft07(node: Any) -> Any:
    """msgspec's 2020-12 output in draft-07 form: ``$defs`` → ``definitions`` (and their
    ``$ref``s), and ``additionalProperties: false`` on every object with ``properties``."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$defs":
            out["definitions"] = _draft07(value)
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/$defs/", "#/definitions/")
        else:
            out[key] = _draft07(value)
    if "properties" in out and out.get("type") == "object":
        out["additionalProperties"] = False
    return out


def _inline_root(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["$ref"].rsplit("/", 1)[-1]
    defs = dict(schema.get("$defs", {}))
    root = defs.pop(ref)
    out: dict[str, Any] = {**root}
    if defs:
        out["$defs"] = defs
    return out


def envelope_schema(lark_type: str) -> dict[str, Any]:
    """Generate the schema of the envelope v1 records of one Lark type.

    Args:
        lark_type: A key of :data:`bridge.envelope.DATA_TYPES`.

    Returns:
        The JSON Schema (draft-07) as a dict, ``type`` and ``dataschema`` pinned to constants.

    Raises:
        KeyError: ``lark_type`` is not a key of :data:`bridge.envelope.DATA_TYPES`.
    """
    data_type = ev.DATA_TYPES[lark_type]
    root = _inline_root(msgspec.json.schema(ev.CloudEvent[data_type]))  # type: ignore[valid-type]
    props = root["properties"]
    props["type"] = {"const": lark_type, "description": "The Lark event type, verbatim."}
    props["dataschema"] = {"const": ev.dataschema_id(lark_type)}
    return {
        "$schema": DRAFT,
        **_draft07(root),
        "title": f"Lark {lark_type}, envelope v1 (CloudEvents 1.0, structured JSON)",
    }


#: File stem of the third-party topic's schema: any of the three change types.
THIRD_PARTY_TOPIC: Final = "third_party_meeting_room_event"


def third_party_topic_schema() -> dict[str, Any]:
    """Generate the schema of the third-party topic's records.

    The topic carries the three change types
    (``third_party_meeting_room_event_{created,updated,deleted}``): one schema per topic, as a
    schema registry's default subject naming (``<topic>-value``) wants.

    Returns:
        The JSON Schema (draft-07) as a dict, ``type`` and ``dataschema`` an enum of the three.
    """
    root = _inline_root(msgspec.json.schema(ev.CloudEvent[ev.ThirdPartyMeetingRoomEventData]))
    props = root["properties"]
    props["type"] = {"enum": list(ev.THIRD_PARTY_TYPES), "description": "The Lark event type, verbatim."}
    props["dataschema"] = {"enum": [ev.dataschema_id(t) for t in ev.THIRD_PARTY_TYPES]}
    return {
        "$schema": DRAFT,
        **_draft07(root),
        "title": (
            "Lark third_party_meeting_room_event_{created,updated,deleted}, envelope v1 "
            "(CloudEvents 1.0, structured JSON)"
        ),
    }


def data_schema(data_type: type[Any], title: str) -> dict[str, Any]:
    """Generate the schema of one ``data`` model: a binary-mode record's whole value.

    Args:
        data_type: The model (a value of :data:`bridge.envelope.DATA_TYPES`, or
            :class:`bridge.envelope.DeadLetterData`).
        title: The schema's title.

    Returns:
        The JSON Schema (draft-07) as a dict, the same shape as the envelope schema's ``data``.
    """
    root = _inline_root(msgspec.json.schema(data_type))
    return {"$schema": DRAFT, **_draft07(root), "title": title}


def event_data_schema(lark_type: str) -> dict[str, Any]:
    """Generate the ``data`` schema of one Lark type (:func:`data_schema`).

    Args:
        lark_type: A key of :data:`bridge.envelope.DATA_TYPES`; the three third-party types have
            one shape, :data:`THIRD_PARTY_TOPIC`'s.

    Returns:
        The JSON Schema (draft-07) as a dict.

    Raises:
        KeyError: ``lark_type`` is not a key of :data:`bridge.envelope.DATA_TYPES`.
    """
    name = (
        "third_party_meeting_room_event_{created,updated,deleted}" if lark_type in ev.THIRD_PARTY_TYPES else lark_type
    )
    return data_schema(
        ev.DATA_TYPES[lark_type],
        f"Lark {name}, data of envelope v1 (the record value in CloudEvents binary content mode)",
    )


def dead_letter_data_schema() -> dict[str, Any]:
    """Generate the ``data`` schema of dead-letter records v1 (:func:`data_schema`).

    Returns:
        The JSON Schema (draft-07) as a dict.
    """
    return data_schema(
        ev.DeadLetterData,
        "Lark bridge dead-letter record v1, data (the record value in CloudEvents binary content mode)",
    )


def topic_schema(lark_types: frozenset[str] | None, *, binary: bool = False) -> dict[str, Any]:
    """Pick the one schema of a topic.

    Args:
        lark_types: The Lark types the topic carries; None for the dead-letter topic.
        binary: Whether the topic's records are in CloudEvents binary content mode (the value is
            ``data`` alone). Default False.

    Returns:
        The JSON Schema (draft-07) as a dict: :func:`dead_letter_schema`,
        :func:`envelope_schema` of the one type, or :func:`third_party_topic_schema`; in binary
        mode, :func:`dead_letter_data_schema` or :func:`event_data_schema` instead.

    Raises:
        ValueError: A mix no single envelope schema covers (e.g. room and reserve-config events
            on one topic).
    """
    if lark_types is None:
        return dead_letter_data_schema() if binary else dead_letter_schema()
    if len(lark_types) == 1 or lark_types <= set(ev.THIRD_PARTY_TYPES):
        one = min(lark_types)
        if binary:
            return event_data_schema(one)
        return envelope_schema(one) if len(lark_types) == 1 else third_party_topic_schema()
    raise ValueError(f"no single schema covers {sorted(lark_types)} on one topic")


def dead_letter_schema() -> dict[str, Any]:
    """Generate the schema of dead-letter records v1.

    Returns:
        The JSON Schema (draft-07) as a dict.
    """
    root = _inline_root(msgspec.json.schema(ev.DeadLetterEnvelope))
    root["properties"]["dataschema"] = {"const": ev.dead_letter_schema_id()}
    return {
        "$schema": DRAFT,
        **_draft07(root),
        "title": "Lark bridge dead-letter record v1 (CloudEvents 1.0, structured JSON)",
    }


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


#: The receive time of the example dead letter, unix ms: fixed, so that examples are
#: reproducible.
EXAMPLE_RECEIVED_MS: Final = 1_608_725_990_000


def examples() -> dict[str, list[Any]]:
    """Build the example records: the documented samples, normalized, and one dead letter.

    The dead letter is the room sample without ``room_id``. Third-party types other than
    ``_created`` reuse its sample with the type swapped (no documented sample exists,
    docs/protocol.md §9.1).

    Returns:
        ``{schema file stem: [example records as decoded JSON]}``; the dead letter's stem is
        ``"dead_letter"``.
    """
    from bridge.decode import decode
    from bridge.errors import DeadLetterCause
    from bridge.inbound import read_inbound
    from bridge.normalize import Topics, dead_letter, normalize
    from bridge.samples import sample

    topics = Topics.single("t", dead_letter="dlq")

    def records_of(body: dict[str, Any]) -> list[Any]:
        inbound = read_inbound(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        try:
            recs = normalize(decode(inbound), topics)
        except DeadLetterCause as failure:
            recs = [dead_letter(inbound, failure, received_ms=EXAMPLE_RECEIVED_MS, topics=topics)]
        return [json.loads(r.value) for r in recs]

    out: dict[str, list[Any]] = {}
    for t in ev.LARK_TYPES:
        base = t if not t.startswith("third_party") else "third_party_meeting_room_event_created"
        body = sample(base)
        if base != t:
            body["event"]["type"] = t
        out[t] = records_of(body)
    broken = sample("vc.room.created_v1")
    del broken["event"]["room"]["room_id"]
    out["dead_letter"] = records_of(broken)
    return out


def generated_files() -> dict[str, str]:
    """Generate every file under ``schemas/``: schemas and examples.

    Returns:
        ``{path relative to schemas/: content}``, each content indented JSON ending in a newline.
    """
    files = {f"envelope/v1/{t}.schema.json": _dump(envelope_schema(t)) for t in ev.LARK_TYPES}
    files[f"envelope/v1/{THIRD_PARTY_TOPIC}.schema.json"] = _dump(third_party_topic_schema())
    for t in ev.LARK_TYPES:
        stem = THIRD_PARTY_TOPIC if t in ev.THIRD_PARTY_TYPES else t
        files[f"envelope/v1/data/{stem}.schema.json"] = _dump(event_data_schema(t))
    files["dead_letter/v1/dead_letter.schema.json"] = _dump(dead_letter_schema())
    files["dead_letter/v1/data/dead_letter.schema.json"] = _dump(dead_letter_data_schema())
    for stem, records in examples().items():
        folder = "dead_letter/v1" if stem == "dead_letter" else "envelope/v1"
        files[f"{folder}/examples/{stem}.json"] = _dump(records)
    return files


def write(root: Path) -> list[Path]:
    """Write the generated schemas and examples under a folder (``python -m bridge schemas write``).

    Args:
        root: The ``schemas/`` folder; missing folders are created.

    Returns:
        The paths written: those that were missing or differed; the others are left alone.
    """
    written = []
    for rel, content in generated_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def check(root: Path) -> list[str]:
    """Compare the files under a folder with what the models generate (``python -m bridge schemas check``).

    Args:
        root: The ``schemas/`` folder.

    Returns:
        The paths, relative to ``root``, that are missing or whose content differs; empty when
        all match.
    """
    stale = []
    for rel, content in generated_files().items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    return stale
