"""The long connection's frame: protobuf ``pbbp2.Frame`` (docs/long_connection.md §3), and the
control and ack frames the client writes (§4, §6).

The two messages are built at import, from their definition in ``pbbp2.proto`` beside this
module (the source, with where it comes from), with the ``protobuf`` package — a private
descriptor pool; no generated code, no ``protoc``. A test keeps the two equal::

    syntax = "proto2";
    package pbbp2;
    message Header { required string key = 1; required string value = 2; }
    message Frame {
      required uint64 SeqID = 1;  required uint64 LogID = 2;
      required int32 service = 3;  required int32 method = 4;
      repeated Header headers = 5;
      optional string payload_encoding = 6;  optional string payload_type = 7;
      optional bytes payload = 8;  optional string LogIDNew = 9;
    }

Pure functions; the only errors are :class:`FrameError`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

METHOD_CONTROL: Final = 0  # header type: ping | pong
METHOD_DATA: Final = 1  # header type: event | card
#: Header names of data frames (§3).
TYPE: Final = "type"
MESSAGE_ID: Final = "message_id"
SUM: Final = "sum"
SEQ: Final = "seq"
TRACE_ID: Final = "trace_id"
BIZ_RT: Final = "biz_rt"


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="pbbp2.proto", package="pbbp2", syntax="proto2")
    fd = descriptor_pb2.FieldDescriptorProto
    header = f.message_type.add(name="Header")
    for number, name in ((1, "key"), (2, "value")):
        header.field.add(name=name, number=number, type=fd.TYPE_STRING, label=fd.LABEL_REQUIRED)
    frame = f.message_type.add(name="Frame")
    fields = (
        (1, "SeqID", fd.TYPE_UINT64, fd.LABEL_REQUIRED),
        (2, "LogID", fd.TYPE_UINT64, fd.LABEL_REQUIRED),
        (3, "service", fd.TYPE_INT32, fd.LABEL_REQUIRED),
        (4, "method", fd.TYPE_INT32, fd.LABEL_REQUIRED),
        (5, "headers", fd.TYPE_MESSAGE, fd.LABEL_REPEATED),
        (6, "payload_encoding", fd.TYPE_STRING, fd.LABEL_OPTIONAL),
        (7, "payload_type", fd.TYPE_STRING, fd.LABEL_OPTIONAL),
        (8, "payload", fd.TYPE_BYTES, fd.LABEL_OPTIONAL),
        (9, "LogIDNew", fd.TYPE_STRING, fd.LABEL_OPTIONAL),
    )
    for number, name, kind, label in fields:
        field = frame.field.add(name=name, number=number, type=kind, label=label)
        if kind == fd.TYPE_MESSAGE:
            field.type_name = ".pbbp2.Header"
    return f


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
#: The message classes (protobuf ``Message`` subclasses).
Frame: Final[Any] = message_factory.GetMessageClass(_pool.FindMessageTypeByName("pbbp2.Frame"))
Header: Final[Any] = message_factory.GetMessageClass(_pool.FindMessageTypeByName("pbbp2.Header"))


class FrameError(ValueError):
    """Bytes that are not one complete ``pbbp2.Frame`` (malformed, truncated, or missing a
    required field)."""


def decode_frame(data: bytes) -> Any:
    """The :data:`Frame` in ``data``. Raises :class:`FrameError`."""
    frame = Frame()
    try:
        frame.ParseFromString(data)
    except (message.DecodeError, ValueError, RuntimeError) as exc:
        raise FrameError(f"not a frame ({type(exc).__name__})") from None
    if not frame.IsInitialized():
        raise FrameError("a required field is missing: " + ", ".join(frame.FindInitializationErrors()))
    # proto2 strings must be UTF-8; the parser hands invalid ones back as bytes instead of failing
    texts = [frame.payload_encoding, frame.payload_type, frame.LogIDNew]
    texts.extend(t for h in frame.headers for t in (h.key, h.value))
    if not all(isinstance(t, str) for t in texts):
        raise FrameError("a string field is not UTF-8")
    return frame


def encode_frame(frame: Any) -> bytes:
    """``frame`` serialized (fields in number order). Raises :class:`FrameError` when a required
    field is unset."""
    try:
        data: bytes = frame.SerializeToString()
    except message.EncodeError as exc:
        raise FrameError(str(exc)) from None
    return data


def headers_of(frame: Any) -> dict[str, str]:
    """The frame's headers as a dict (a repeated key: the last value wins)."""
    return {h.key: h.value for h in frame.headers}


def ping_frame(service_id: int) -> bytes:
    """The client's ping (§4): control, ``service`` = the URL's ``service_id``, ``SeqID`` and
    ``LogID`` 0, one header ``type=ping``, no payload."""
    try:
        frame = Frame(SeqID=0, LogID=0, service=service_id, method=METHOD_CONTROL)
    except ValueError as exc:  # outside int32
        raise FrameError(f"service id out of range: {exc}") from None
    frame.headers.add(key=TYPE, value="ping")
    return encode_frame(frame)


def ack_frame(frame: Any, code: int, biz_rt_ms: int) -> bytes:
    """The ack of data ``frame`` (§6): the same frame — every field and header — with a header
    ``biz_rt`` (handling time, ms) appended and the payload replaced by ``{"code": code}``
    (compact JSON; 200 handled, 500 failed: the platform re-pushes)."""
    ack = Frame()
    ack.CopyFrom(frame)
    ack.headers.add(key=BIZ_RT, value=str(max(0, biz_rt_ms)))
    ack.payload = json.dumps({"code": code}, separators=(",", ":")).encode()
    return encode_frame(ack)
