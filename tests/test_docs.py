"""The README stays a short door into docs/, and every relative link in the docs leads somewhere."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 150
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "examples").glob("*/README.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or [text](target "title"); images too. Inline code is removed before matching.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(path):
    """``(line number, text)`` of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every heading's anchor in ``path``; a repeated heading gets -1, -2, ... as on GitHub."""
    seen, found = {}, set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path):
    """``(line number, target)`` of each link that is not a URL (http:, mailto:, ...)."""
    for number, line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                yield number, target


def broken_links(path, root=REPO):
    """One message per relative link of ``path`` whose file, or whose #anchor in it, does not exist."""
    broken, root, path = [], root.resolve(), path.resolve()
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not linked.exists():
            broken.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{where}: no heading with anchor #{anchor} in {linked.relative_to(root)}")
    return broken


def test_the_readme_is_under_150_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_the_readme_keeps_the_quick_start_commands():
    text = README.read_text(encoding="utf-8")
    assert "bash tools/demo.sh" in text and "bash tools/test.sh" in text


def test_every_doc_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in relative_links(README)}
    unlinked = [p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs not in the README's table: {unlinked}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_and_headings_that_exist(path):
    broken = broken_links(path)
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A heading: with `code`\n\n## Twice\n\n## Twice\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#a-heading-with-code) [ok](other.md#twice-1) [ok](#local) [web](https://x.org/y)\n"
                   "# Local\n\n```\n[in a fence](missing.md)\n```\n"
                   "[gone](missing.md) [bad anchor](other.md#no-such-heading)\n")
    assert broken_links(doc, root=tmp_path) == ["doc.md:7: missing.md: no such file",
                      "doc.md:7: other.md#no-such-heading: no heading with anchor #no-such-heading in other.md"]
