"""The docs hang together: every relative link resolves (file and heading), every page under
docs/ is reachable from the README, and the README stays a front door (≤ 300 lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import markdown
from tests.support import REPO

DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *DOCS.glob("*.md"), *(REPO / "data").rglob("README.md")])
README = REPO / "README.md"


def _broken(page: Path) -> list[str]:
    text = page.read_text()
    problems = []
    for target in markdown.links(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in markdown.anchors(dest.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert _broken(page) == []


def test_every_doc_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in markdown.links(README.read_text())}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages and sorted(str(p.relative_to(REPO)) for p in pages - linked) == []


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert 50 < len(lines) <= 300


def test_nothing_cites_documents_the_repository_does_not_have():
    """SPEC/CONTRACT/ARCHITECTURE/TESTING were the builders' documents; the docs stand alone."""
    cited = [f"{p.relative_to(REPO)}: {word}" for p in PAGES for word in ("SPEC", "CONTRACT", "ARCHITECTURE.md",
                                                                         "TESTING.md") if word in p.read_text()]
    assert cited == []
