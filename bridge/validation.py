"""Where a decoded JSON value fails its msgspec model: the failing field's JSON path, found by
walking the model, never by reading msgspec's error text.

msgspec reports a validation failure as one message string (``Expected `int`, got `str` - at
`$.room.capacity```). Dead letters need the path as data, and parsing the text would break the
day msgspec rewords it. Instead, on the (rare) failure path, :func:`locate` walks the model's
type annotations (``msgspec.structs.fields``) beside the value and re-validates each child with
``msgspec.convert`` until it reaches the innermost value that fails *at its own root*; msgspec's
message for that value then carries no path, and the path is the one the walk built.

Paths use msgspec's notation: ``$`` the root, ``.name`` a field, ``[i]`` a list item.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec


class Invalid(Exception):
    """A value that does not fit its model.

    ``str()`` is ``"{detail} - at `{path}`"``, the form the dead letters' ``error`` field carries.

    Args:
        detail: What is wrong: msgspec's wording for the innermost failing value (no path in it).
        path: The JSON path of that value (``$.event.room.room_id``).
    """

    def __init__(self, detail: str, path: str) -> None:
        super().__init__(f"{detail} - at `{path}`")
        self.detail = detail
        self.path = path


def _strip(tp: Any) -> Any:
    """The type under ``Annotated[...]`` layers."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _only_member(tp: Any) -> Any:
    """For ``X | None`` the ``X`` (annotations stripped); the type itself otherwise."""
    base = _strip(tp)
    if get_origin(base) in (Union, types.UnionType):
        members = [a for a in get_args(base) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return base


def _fits(value: Any, tp: Any, strict: bool) -> bool:
    try:
        msgspec.convert(value, tp, strict=strict)
    except msgspec.ValidationError:
        return False
    return True


def locate(value: Any, tp: Any, *, path: str = "$", strict: bool = True) -> Invalid | None:
    """Find where a value fails its model.

    Call it after a decode of the same value against ``tp`` failed. Children are checked in the
    value's own key order, then missing required fields, which is the order msgspec reports them
    in. Raises nothing.

    Args:
        value: Decoded JSON: dicts, lists, scalars.
        tp: A msgspec-supported type (a Struct, ``list[...]``, ``X | None``, ``Annotated``
            constraints, scalars).
        path: The JSON path of ``value`` itself. Default ``"$"``.
        strict: As for ``msgspec.convert``; ``False`` lets numeric strings become integers.
            Default ``True``.

    Returns:
        The :class:`Invalid` of the innermost failing value, or None when ``value`` fits after
        all.
    """
    node = _only_member(tp)
    if isinstance(node, type) and issubclass(node, msgspec.Struct) and type(value) is dict:
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(node)}
        for key, child in value.items():
            ftype = fields.get(key)
            if ftype is not None and not _fits(child, ftype, strict):
                return locate(child, ftype, path=f"{path}.{key}", strict=strict)
    elif get_origin(node) is list and type(value) is list:
        (item_type,) = get_args(node)
        for i, child in enumerate(value):
            if not _fits(child, item_type, strict):
                return locate(child, item_type, path=f"{path}[{i}]", strict=strict)
    try:
        msgspec.convert(value, tp, strict=strict)
    except msgspec.ValidationError as exc:
        return Invalid(str(exc), path)
    return None


def convert(value: Any, tp: Any, *, path: str = "$", strict: bool = True) -> Any:
    """``msgspec.convert(value, tp)``, raising :class:`Invalid` instead of ``msgspec.ValidationError``.

    Args:
        value: Decoded JSON: dicts, lists, scalars.
        tp: A msgspec-supported type.
        path: The JSON path of ``value`` in its document. Default ``"$"``.
        strict: As for ``msgspec.convert``; ``False`` lets numeric strings become integers.
            Default ``True``.

    Returns:
        ``value`` converted to ``tp``.

    Raises:
        Invalid: ``value`` does not fit ``tp``; carries the failing value's path (:func:`locate`).
    """
    try:
        return msgspec.convert(value, tp, strict=strict)
    except msgspec.ValidationError as exc:
        raise (locate(value, tp, path=path, strict=strict) or Invalid(str(exc), path)) from None
