"""The failing field's path comes from walking the model (bridge.validation), not from msgspec's
error text. Cross-checked here against the path msgspec itself reports, on mutated samples."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import envelope as ev
from bridge.samples import SAMPLE_TYPES, sample
from bridge.validation import Invalid, convert, locate

_MSGSPEC_PATH = re.compile(r"^(?P<detail>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.S)


def msgspec_says(value: Any, tp: Any) -> tuple[str, str] | None:
    """(detail, path) as msgspec's own message words them — only to cross-check the locator."""
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        m = _MSGSPEC_PATH.match(str(exc))
        assert m is not None
        return m["detail"], m["path"] or "$"
    return None


@pytest.mark.parametrize(
    ("value", "path", "detail"),
    [
        ({"room": {}}, "$.room", "Object missing required field `room_id`"),
        ({"room": {"room_id": ""}}, "$.room.room_id", "Expected `str` of length >= 1"),
        ({"room": {"room_id": "r", "capacity": "many"}}, "$.room.capacity", "Expected `int | null`, got `str`"),
        (
            {"room": {"room_id": "r", "device": [{}, {"name": 3}]}},
            "$.room.device[1].name",
            "Expected `str | null`, got `int`",
        ),
        ({"room": []}, "$.room", "Expected `object`, got `array`"),
        ([], "$", "Expected `object`, got `array`"),
    ],
)
def test_locate_names_the_innermost_failing_value(value: Any, path: str, detail: str) -> None:
    found = locate(value, ev.RoomCreatedData, strict=False)
    assert found is not None and (found.path, found.detail) == (path, detail)
    assert str(found) == f"{detail} - at `{path}`"


def test_convert_prefixes_the_document_path_and_returns_the_value_when_it_fits() -> None:
    with pytest.raises(Invalid) as info:
        convert({"room": {"room_id": 1}}, ev.RoomCreatedData, path="$.event")
    assert info.value.path == "$.event.room.room_id"
    ok = convert({"room": {"room_id": "r", "capacity": "12"}}, ev.RoomCreatedData, strict=False)
    assert ok.room.capacity == 12
    assert locate({"room": {"room_id": "r"}}, ev.RoomCreatedData) is None


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**13), st.text(max_size=5), st.just("12"))
_json = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6
)


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        op = draw(st.sampled_from(["del", "deep", "replace"]))
        if op == "del":
            del out[key]
        elif op == "deep":
            out[key] = _mutate(draw, value[key])
        else:
            out[key] = draw(_json)
        return out
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(draw, value[i]), *value[i + 1 :]]
    return draw(_json)


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[Any, Any]:
    kind = draw(st.sampled_from(SAMPLE_TYPES))
    event = sample(kind)["event"]
    for _ in range(draw(st.integers(1, 3))):
        event = _mutate(draw, event)
    return event, ev.DATA_TYPES[kind]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_locator_agrees_with_msgspec_on_mutated_events(case: tuple[Any, Any]) -> None:
    value, tp = case
    expected = msgspec_says(value, tp)
    found = locate(value, tp, strict=False)
    if expected is None:
        assert found is None
    else:
        assert found is not None and (found.detail, found.path) == expected
