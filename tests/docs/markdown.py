"""Just enough Markdown for the docs tests: links, heading anchors, tables and fenced blocks.

Anchors follow GitHub's rule (lower case; punctuation other than `-` and `_` dropped; spaces
become `-`; repeats get `-1`, `-2`), so a link that works here works where the repository is
browsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed (links and headings there are not real)."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", text).splitlines():
        m = re.match(r"^(#{1,6}) +(.*?) *#*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str) -> list[str]:
    """Targets of the inline links outside code, in order."""
    return _LINK.findall(without_code(text))


def fenced(text: str, language: str) -> list[str]:
    """Contents of the fenced blocks of one language, in order."""
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def tables(text: str) -> Iterator[list[list[str]]]:
    """Every pipe table as rows of stripped cells (header first, separator row dropped)."""
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            yield rows
            rows = []


def section(text: str, heading: str) -> str:
    """The text under `heading` (a full heading line, e.g. `## Scorer`) up to the next heading
    of the same or a higher level; `#` lines inside fenced blocks are not headings."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    fence = False
    for i in range(start, len(lines)):
        if lines[i].startswith("```"):
            fence = not fence
        elif not fence and re.match(rf"^#{{1,{level}}} ", lines[i]):
            return "\n".join(lines[start:i])
    return "\n".join(lines[start:])
