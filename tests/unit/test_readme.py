"""README stays true: its configuration table is what the settings model generates."""

from __future__ import annotations

from pathlib import Path

from bridge.settings import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_reference_matches_the_settings_model() -> None:
    assert settings_markdown() in README.read_text(encoding="utf-8"), "run: python -m bridge config-reference"


def test_two_setup_commands_are_the_ones_ci_and_make_know() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
