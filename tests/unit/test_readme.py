"""README and docs/ stay true: README is a short front door that reaches every reference page in
one click; the generated tables are what their commands print; every link lands on a page and
heading that exist; every command the pages show exists (make targets, modules) or parses
(``python -m bridge …``). The dead-letters and helm commands are also run as shown, by
tests/integration/test_dead_letters.py and tests/helm/test_chart.py."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from importlib.util import find_spec
from pathlib import Path

import pytest

from bridge.__main__ import _parser
from bridge.metrics import metrics_markdown
from bridge.settings import settings_markdown
from tests.support.docs import (
    DOCS,
    README,
    REPO_ROOT,
    anchors_of,
    doc_pages,
    fenced_blocks,
    inline_code,
    relative_links,
    text_of,
)

#: Where each section README used to hold lives now (a link README must carry, to the page or
#: straight to the heading).
MOVED = {
    "HTTP interface": "docs/http.md",
    "Configuration reference": "docs/configuration.md",
    "Topics and keys": "docs/envelope.md#topics-and-keys",
    "Envelope v1": "docs/envelope.md#envelope-v1",
    "Schemas and versioning": "docs/envelope.md#schemas-and-versioning",
    "Schema registry": "docs/registry.md",
    "Delivery semantics": "docs/delivery.md",
    "Operations": "docs/operations.md",
    "Metrics": "docs/metrics.md",
    "Traces": "docs/operations.md#traces",
    "Dead letters": "docs/operations.md#dead-letters",
    "Dashboard and alerts": "docs/operations.md#dashboard-and-alerts",
    "Helm": "docs/helm.md",
}


def test_configuration_reference_matches_the_settings_model() -> None:
    page = text_of(DOCS / "configuration.md")
    assert settings_markdown() in page, "run: python -m bridge config-reference"


def test_metrics_reference_matches_the_metrics() -> None:
    page = text_of(DOCS / "metrics.md")
    assert metrics_markdown() in page, "run: python -m bridge metrics-reference"


def test_the_reference_commands_print_the_tables() -> None:
    for command, table in (("config-reference", settings_markdown()), ("metrics-reference", metrics_markdown())):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            from bridge.__main__ import main

            assert main([command]) == 0
        assert out.getvalue() == table + "\n"


def test_two_setup_commands_are_the_ones_ci_and_make_know() -> None:
    text = text_of(README)
    assert "make demo" in text and "make test" in text
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_is_a_front_door() -> None:
    assert len(text_of(README).splitlines()) <= 200


@pytest.mark.parametrize(("section", "target"), MOVED.items())
def test_every_moved_section_is_one_click_from_readme(section: str, target: str) -> None:
    links = relative_links(text_of(README))
    page, _, heading = target.partition("#")
    assert target in links or page in links, f"README links {section} nowhere"
    text = text_of(REPO_ROOT / page)
    assert section.lower() in text.lower(), f"{page} no longer holds {section}"
    assert not heading or heading in anchors_of(text)


def test_every_docs_page_is_linked_from_readme() -> None:
    links = {link.split("#")[0] for link in relative_links(text_of(README))}
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in links, page.name


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_links_land_on_a_page_and_a_heading_that_exist(page: Path) -> None:
    for link in relative_links(text_of(page)):
        path, _, heading = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if heading:
            assert target.suffix == ".md", f"{page.name}: {link}"
            assert heading in anchors_of(text_of(target)), f"{page.name}: {link}"


def _shown_commands() -> list[tuple[str, str]]:
    """(page, command) for every line of an ``sh`` block and every inline code span of the pages."""
    shown = []
    for page in doc_pages():
        text = text_of(page)
        for block in fenced_blocks(text, lang="sh"):
            joined = re.sub(r"\\\n\s*", " ", block)
            shown += [(page.name, re.sub(r"\s+#\s.*$", "", line).strip()) for line in joined.splitlines()]
        shown += [(page.name, span.strip()) for span in inline_code(text)]
    return [(name, command) for name, command in shown if command]


def test_make_targets_shown_exist() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    shown = [(p, c) for p, c in _shown_commands() if re.fullmatch(r"make [\w-]+", c)]
    assert len(shown) >= 4
    for page, command in shown:
        assert command.split()[1] in targets, f"{page}: {command}"


def test_python_modules_shown_exist() -> None:
    shown = [(p, c) for p, c in _shown_commands() if c.startswith("python -m ")]
    assert len(shown) >= 10
    for page, command in shown:
        module = command.split()[2]
        assert find_spec(module) is not None, f"{page}: {command}"


def test_bridge_commands_shown_parse() -> None:
    """Every ``python -m bridge …`` the pages show as a whole command parses with the command
    line's own parser (a shown subcommand, action or flag that went away fails here). Spans that
    name alternatives (``list|replay``) or stand for more (``…``) are prose, not commands."""
    shown = [
        (p, c)
        for p, c in _shown_commands()
        if c.startswith("python -m bridge ") and "|" not in c and "…" not in c and "<" not in c
    ]
    assert {c.split()[3] for _, c in shown} >= {"serve", "dead-letters", "schemas", "config-reference"}
    for page, command in shown:
        args = shlex.split(command)[3:]
        err = io.StringIO()
        code: int | str | None = None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                _parser().parse_args(args)
            except SystemExit as exc:  # --help exits 0; an unknown argument exits 2
                code = exc.code
        assert code in (None, 0), f"{page}: {command}: {err.getvalue()}"
