"""Our long-connection frames (:mod:`bridge.ingress.frames`) against the official SDK's
(``lark_oapi.ws.pb.pbbp2_pb2.Frame``, lark-oapi's bundled protobuf): test plan 1 of
docs/long_connection.md §9.5.

The §3 reference bytes; round trips both ways for random values (uint64 maxima, negative
int32, unicode, arbitrary payload bytes, optional fields set or not); SDK-GO's encoding (empty
fields 6, 7, 9, no payload); unknown fields; truncated, corrupted and missing-field input
rejected with ``FrameError`` only; the ack of §6.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lark_oapi.ws.pb.pbbp2_pb2 import Frame as SdkFrame

from bridge.ingress import frames
from bridge.ingress.frames import FrameError, ack_frame, decode_frame, encode_frame, headers_of, ping_frame

OPTIONAL_STRINGS = ("payload_encoding", "payload_type", "LogIDNew")

# docs/long_connection.md §3, verbatim.
PING_1234 = bytes.fromhex("08 00 10 00 18 d2 09 20 00 2a 0c 0a 04 74 79 70 65 12 04 70 69 6e 67")
DATA = bytes.fromhex(
    "08 01 10 02 18 d2 09 20 01"
    "2a 0d 0a 04 74 79 70 65 12 05 65 76 65 6e 74"
    "2a 10 0a 0a 6d 65 73 73 61 67 65 5f 69 64 12 02 6d 31"
    "2a 08 0a 03 73 75 6d 12 01 31   2a 08 0a 03 73 65 71 12 01 30"
    "2a 0e 0a 08 74 72 61 63 65 5f 69 64 12 02 74 31   42 02 7b 7d"
)
ACK_TAIL = bytes.fromhex("2a 0c 0a 06 62 69 7a 5f 72 74 12 02 31 32   42 0c 7b 22 63 6f 64 65 22 3a 32 30 30 7d")
ACK = DATA[:-4] + ACK_TAIL
DATA_HEADERS = [("type", "event"), ("message_id", "m1"), ("sum", "1"), ("seq", "0"), ("trace_id", "t1")]
#: Offsets in DATA where a field ends (a cut there leaves whole fields).
DATA_BOUNDARIES = (0, 2, 4, 7, 9, 24, 42, 52, 62, 78, 82)


# --------------------------------------------------------------------------- helpers


def values_of(frame: Any) -> dict[str, Any]:
    """Every field of a ``pbbp2.Frame`` (ours or the SDK's); unset optional fields are ``None``."""
    values: dict[str, Any] = {
        "SeqID": frame.SeqID,
        "LogID": frame.LogID,
        "service": frame.service,
        "method": frame.method,
        "headers": [(h.key, h.value) for h in frame.headers],
        "payload": bytes(frame.payload) if frame.HasField("payload") else None,
    }
    for name in OPTIONAL_STRINGS:
        values[name] = getattr(frame, name) if frame.HasField(name) else None
    return values


def _fill(frame: Any, values: dict[str, Any]) -> Any:
    frame.SeqID = values["SeqID"]
    frame.LogID = values["LogID"]
    frame.service = values["service"]
    frame.method = values["method"]
    for key, value in values["headers"]:
        header = frame.headers.add()
        header.key = key
        header.value = value
    for name in ("payload", *OPTIONAL_STRINGS):
        if values[name] is not None:
            setattr(frame, name, values[name])
    return frame


def ours(values: dict[str, Any]) -> Any:
    return _fill(frames.Frame(), values)


def sdk(values: dict[str, Any]) -> Any:
    return _fill(SdkFrame(), values)


def sdk_parse(data: bytes) -> Any:
    frame = SdkFrame()
    frame.ParseFromString(data)
    return frame


UINT64 = st.integers(0, 2**64 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
frame_values = st.fixed_dictionaries(
    {
        "SeqID": UINT64 | st.sampled_from([0, 2**64 - 1]),
        "LogID": UINT64 | st.sampled_from([0, 2**64 - 1]),
        "service": INT32 | st.sampled_from([-(2**31), -1, 2**31 - 1]),
        "method": INT32 | st.sampled_from([0, 1, -1]),
        "headers": st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=8),
        "payload": st.none() | st.binary(max_size=300),
        "payload_encoding": st.none() | st.text(max_size=20),
        "payload_type": st.none() | st.text(max_size=20),
        "LogIDNew": st.none() | st.text(max_size=20),
    }
)


# --------------------------------------------------------------------------- §3 reference bytes


def test_reference_bytes_have_the_documented_sizes() -> None:
    assert (len(PING_1234), len(DATA), len(ACK)) == (23, 82, 106)


def test_ping_matches_the_reference_and_the_sdk() -> None:
    ping = SdkFrame()  # as the SDK's _new_ping_frame builds it
    header = ping.headers.add()
    header.key, header.value = "type", "ping"
    ping.service, ping.method, ping.SeqID, ping.LogID = 1234, 0, 0, 0
    assert ping_frame(1234) == PING_1234 == ping.SerializeToString()


def test_data_frame_matches_the_reference_and_the_sdk() -> None:
    values = {
        "SeqID": 1,
        "LogID": 2,
        "service": 1234,
        "method": 1,
        "headers": DATA_HEADERS,
        "payload": b"{}",
        **dict.fromkeys(OPTIONAL_STRINGS),
    }
    assert encode_frame(ours(values)) == DATA == sdk(values).SerializeToString()
    assert values_of(decode_frame(DATA)) == values == values_of(sdk_parse(DATA))


def test_ack_matches_the_reference_and_the_sdk() -> None:
    assert ack_frame(decode_frame(DATA), 200, 12) == ACK
    # The SDK's own steps (ws/client.py _handle_data_frame) with the compact payload.
    frame = sdk_parse(DATA)
    header = frame.headers.add()
    header.key, header.value = "biz_rt", "12"
    frame.payload = b'{"code":200}'
    assert frame.SerializeToString() == ACK


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(frame_values)
def test_ours_to_sdk_round_trip(values: dict[str, Any]) -> None:
    data = encode_frame(ours(values))
    assert values_of(sdk_parse(data)) == values
    assert data == sdk(values).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(frame_values)
def test_sdk_to_ours_round_trip(values: dict[str, Any]) -> None:
    frame = decode_frame(sdk(values).SerializeToString())
    assert values_of(frame) == values
    assert headers_of(frame) == dict(values["headers"])


# --------------------------------------------------------------------------- other encoders, bad input


def test_sdk_go_style_frame_decodes() -> None:
    # SDK-GO always writes fields 6, 7, 9 (empty strings) and leaves payload out when nil.
    go = DATA[:-4] + bytes.fromhex("32 00 3a 00 4a 00")
    frame = decode_frame(go)
    assert values_of(frame) == {
        "SeqID": 1,
        "LogID": 2,
        "service": 1234,
        "method": 1,
        "headers": DATA_HEADERS,
        "payload": None,
        "payload_encoding": "",
        "payload_type": "",
        "LogIDNew": "",
    }
    assert values_of(frame) == values_of(sdk_parse(go))
    ack = decode_frame(ack_frame(frame, 200, 3))
    assert (ack.payload_encoding, ack.payload_type, ack.LogIDNew) == ("", "", "")
    assert all(ack.HasField(name) for name in OPTIONAL_STRINGS)


def test_unknown_fields_are_skipped() -> None:
    unknown = bytes.fromhex(
        "78 05"  # field 15, varint
        "52 03 61 62 63"  # field 10, length-delimited
        "59 01 02 03 04 05 06 07 08"  # field 11, fixed64
        "65 01 02 03 04"  # field 12, fixed32
        "a0 1f 96 01"  # field 500, varint
    )
    for data in (unknown + DATA, DATA[:9] + unknown + DATA[9:], DATA + unknown):
        assert values_of(decode_frame(data)) == values_of(decode_frame(DATA)) == values_of(sdk_parse(data))


def test_negative_int32_is_a_ten_byte_varint() -> None:
    values: dict[str, Any] = {
        "SeqID": 2**64 - 1,
        "LogID": 0,
        "service": -1,
        "method": -(2**31),
        "headers": [],
        **dict.fromkeys(("payload", *OPTIONAL_STRINGS)),
    }
    data = encode_frame(ours(values))
    assert data == bytes.fromhex(
        "08 ff ff ff ff ff ff ff ff ff 01 10 00 18 ff ff ff ff ff ff ff ff ff 01"
    ) + bytes.fromhex("20 80 80 80 80 f8 ff ff ff ff 01")
    assert values_of(sdk_parse(data)) == values == values_of(decode_frame(data))


@pytest.mark.parametrize("cut", range(len(DATA)))
def test_truncated_frames(cut: int) -> None:
    if cut in DATA_BOUNDARIES and cut >= 9:  # whole fields, the four required ones present
        assert values_of(decode_frame(DATA[:cut])) == values_of(sdk_parse(DATA[:cut]))
    else:
        with pytest.raises(FrameError):
            decode_frame(DATA[:cut])


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("no SeqID", DATA[2:]),
        ("no LogID", DATA[:2] + DATA[4:]),
        ("no service", DATA[:4] + DATA[7:]),
        ("no method", DATA[:7] + DATA[9:]),
        ("header without value", DATA[:9] + bytes.fromhex("2a 06 0a 04 74 79 70 65")),
        ("header without key", DATA[:9] + bytes.fromhex("2a 07 12 05 65 76 65 6e 74")),
        ("empty", b""),
    ],
)
def test_a_missing_required_field_is_a_frame_error(name: str, data: bytes) -> None:
    with pytest.raises(FrameError, match="required"):
        decode_frame(data)
    assert not sdk_parse(data).IsInitialized(), name  # the SDK parses it but cannot serialize it (§3)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """DATA or ACK with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from([DATA, ACK, PING_1234])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if op == "insert" or at == len(data):
            data.insert(at, byte)
        elif op == "replace":
            data[at] = byte
        else:
            del data[at]
    return bytes(data)


def _is_valid_utf8(frame: Any) -> bool:
    strings = [s for h in frame.headers for s in (h.key, h.value)]
    strings += [getattr(frame, name) for name in OPTIONAL_STRINGS]
    return all(isinstance(s, str) for s in strings)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | mutated())
def test_arbitrary_bytes_give_a_frame_or_a_frame_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except FrameError:
        event("rejected")
        return
    assert frame.IsInitialized()
    event("decoded")
    if _is_valid_utf8(frame):
        # Whatever we accept, the SDK reads the same way.
        assert values_of(sdk_parse(data)) == values_of(frame)


def test_invalid_utf8_in_a_string_field_is_a_frame_error() -> None:
    data = DATA[:9] + bytes.fromhex("2a 06 0a 02 ff fe 12 00")
    with pytest.raises(UnicodeDecodeError):
        sdk_parse(data)
    with pytest.raises(FrameError):
        decode_frame(data)


def test_ping_with_a_service_id_outside_int32_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        ping_frame(2**31)


# --------------------------------------------------------------------------- the ack (§6)


@settings(max_examples=300, deadline=None)
@given(frame_values, st.sampled_from([200, 500]), st.integers(-(10**6), 10**9))
def test_ack_keeps_every_field_and_header(values: dict[str, Any], code: int, biz_rt_ms: int) -> None:
    frame = decode_frame(sdk(values).SerializeToString())
    raw = ack_frame(frame, code, biz_rt_ms)
    assert values_of(frame) == values  # the received frame is left as it was
    expected = {
        **values,
        "headers": [*values["headers"], ("biz_rt", str(max(0, biz_rt_ms)))],
        "payload": b'{"code":%d}' % code,
    }
    assert values_of(decode_frame(raw)) == expected == values_of(sdk_parse(raw))
    assert raw == sdk(expected).SerializeToString()


def test_ack_payloads_are_exact() -> None:
    frame = decode_frame(DATA)
    assert sdk_parse(ack_frame(frame, 200, 0)).payload == b'{"code":200}'
    assert sdk_parse(ack_frame(frame, 500, 0)).payload == b'{"code":500}'


# --------------------------------------------------------------------------- the .proto in the repo


def test_the_runtime_messages_are_the_ones_of_pbbp2_proto() -> None:
    """bridge/ingress/pbbp2.proto is the source; frames.py builds the same fields at import."""
    import re
    from pathlib import Path

    from bridge.ingress import frames

    text = (Path(frames.__file__).parent / "pbbp2.proto").read_text(encoding="utf-8")
    assert 'syntax = "proto2";' in text and "package pbbp2;" in text
    declared: dict[str, set[tuple[str, str, str, int]]] = {}
    for name, body in re.findall(r"message (\w+) \{(.*?)\}", text, flags=re.S):
        fields = re.findall(r"(required|optional|repeated) (\w+) (\w+) = (\d+);", body)
        declared[name] = {(label, kind, field, int(number)) for label, kind, field, number in fields}
    kinds = {3: "int64", 4: "uint64", 5: "int32", 9: "string", 11: "Header", 12: "bytes"}
    built = {
        cls.DESCRIPTOR.name: {(_label(f), kinds[f.type], f.name, f.number) for f in cls.DESCRIPTOR.fields}
        for cls in (frames.Frame, frames.Header)
    }
    assert built == declared


def _label(field: Any) -> str:
    return "required" if field.is_required else "repeated" if field.is_repeated else "optional"
