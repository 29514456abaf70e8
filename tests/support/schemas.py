"""Validators of the checked-in JSON schemas (``schemas/``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import jsonschema

SCHEMAS_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"


def validator(rel: str) -> jsonschema.Draft7Validator:
    """A format-checking draft-07 validator of ``schemas/<rel>``; the schema itself is
    checked against the metaschema first."""
    schema = json.loads((SCHEMAS_DIR / rel).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def envelope_validators() -> dict[str, jsonschema.Draft7Validator]:
    """A validator per envelope v1 schema, by Lark type."""
    return {
        p.name.removesuffix(".schema.json"): validator(str(p.relative_to(SCHEMAS_DIR)))
        for p in SCHEMAS_DIR.glob("envelope/v1/*.schema.json")
    }


def dead_letter_validator() -> jsonschema.Draft7Validator:
    """The validator of the dead-letter v1 schema."""
    return validator("dead_letter/v1/dead_letter.schema.json")
