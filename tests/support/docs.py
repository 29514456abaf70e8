"""The documentation as the tests read it: README (the front door) and the pages under docs/.

Tests that keep a page true (a generated table, a command that must run as shown) read the pages
through here, so that a section moved from one page to another stays tested.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"


def doc_pages() -> list[Path]:
    """README and every Markdown page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def fenced_blocks(text: str, *, lang: str | None = None) -> list[str]:
    """The contents of the fenced code blocks of ``text`` (only those tagged ``lang`` if given)."""
    blocks = re.findall(r"^```([\w-]*)\n(.*?)^```", text, flags=re.M | re.S)
    return [body for tag, body in blocks if lang is None or tag == lang]


def shell_commands(pattern: str) -> list[str]:
    """Every line of a ``sh`` block of any page that matches ``pattern`` (a regex from the line's
    start), continuation lines (``\\``) joined and trailing ``# comments`` dropped."""
    found = []
    for page in doc_pages():
        for block in fenced_blocks(text_of(page), lang="sh"):
            joined = re.sub(r"\\\n\s*", " ", block)
            for raw in joined.splitlines():
                line = re.sub(r"\s+#\s.*$", "", raw).strip()
                if re.match(pattern, line):
                    found.append(line)
    return found


def inline_code(text: str) -> list[str]:
    """The inline code spans of ``text`` (fenced blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    """The anchors of every heading of ``text`` (repeated headings get ``-1``, ``-2``, … as on GitHub)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose, flags=re.M):
        slug = anchor(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links of ``text`` that point into the repository."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]
