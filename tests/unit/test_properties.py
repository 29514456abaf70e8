"""Property: any mutation of a documented sample, once authenticated, becomes either envelopes
that validate against their schema or exactly one dead-letter record that validates — never a
crash, never nothing."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.decode import decode
from bridge.errors import DeadLetterCause
from bridge.inbound import read_inbound
from bridge.normalize import Topics, dead_letter, normalize
from bridge.samples import SAMPLE_TYPES, sample
from bridge_devtools.platform import compact
from tests.support.schemas import dead_letter_validator, envelope_validators

TOPICS = Topics.from_names(
    room_created="a",
    room_updated="a.room_updated",
    room_deleted="a.room_deleted",
    room_level_created="a.level_created",
    room_level_updated="a.level_updated",
    room_level_deleted="a.level_deleted",
    reserve_config_updated="b",
    third_party="c",
    dead_letter="dlq",
)
TOKEN = "vt-SECRET-9f8e7d6c5b4a"
VALIDATORS = envelope_validators()
DLQ = dead_letter_validator()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "0", "1608725989000", "1603977298000000", "27900", "86401", "omm_x", "x" * 300]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    body = sample(draw(st.sampled_from(SAMPLE_TYPES)))
    # Keep authentication intact: the token stays, so mutations test decode/normalize only.
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(body) if p and "token" not in p]
        if not paths:  # every key deleted by the earlier steps (a 2.0 body has three at the top)
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    if "header" in body and isinstance(body["header"], dict):
        body["header"]["token"] = TOKEN
    else:
        body["token"] = TOKEN
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_samples_become_valid_envelopes_or_one_dead_letter(body: dict[str, Any]) -> None:
    raw = compact(body)
    auth = read_inbound(raw)
    try:
        records = normalize(decode(auth), TOPICS)
    except DeadLetterCause as failure:
        reason = failure.reason
        rec = dead_letter(auth, failure, received_ms=1_700_000_000_000, topics=TOPICS)
        DLQ.validate(json.loads(rec.value))
        assert reason in ("unknown_event_type", "invalid_event")
        assert rec.topic == "dlq" and TOKEN not in rec.value.decode()
        return
    assert records
    for rec in records:
        env = json.loads(rec.value)
        VALIDATORS[env["type"]].validate(env)
        assert rec.key == env["partitionkey"].encode()
        assert TOKEN not in rec.value.decode()
