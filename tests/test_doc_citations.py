"""Every citation of a repository doc in the code and README (`docs/mgie.md §2.6`, `docs/mgie.md G8`,
`docs/smartedit.md §3.3 B and C`, `docs/smartedit.md §2.6 step 8`, ranges such as `§2.2-2.4`) names a doc that
exists and a section heading, lettered subsection, G-item or numbered step that the doc has; and nothing cites the
reference files that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_SECTION = r"§\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?(?: [A-D](?:/[A-D])*(?: and [A-D])?\b)?(?: step \d+)?"
_REF = rf"(?:{_SECTION}|G\d+\b)"
CITATION = re.compile(rf"docs/([\w.-]+\.md)((?:(?:,| /| and)? {_REF}(?: \([^()§]*\))?)*)")  # "(what it is)" allowed
REF = re.compile(
    r"§(?P<num>\d+(?:\.\d+)*)(?:-(?P<end>\d+(?:\.\d+)*))?(?: (?P<letters>[A-D](?:/[A-D])*(?: and [A-D])?)\b)?"
    r"(?: step (?P<step>\d+))?|(?P<g>G\d+)\b"
)
HEADING = re.compile(r"^#+ §(?P<num>\d+(?:\.\d+)*)(?: (?P<letter>[A-D])\b)?")
G_ITEM = re.compile(r"^- \*\*(G\d+)\*\*", re.M)
# Files of the shared reference folder that users of the repository do not have.
OUTSIDE = re.compile(
    r"(?<![\w/-])(?:mgie|smartedit)\.md|shared/reference|ip2p-and-gradio\.md|performance\.md|style\.md"
)


def sources() -> list[Path]:
    files = [*(ROOT / "editor").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "tools").rglob("*.py")]
    files += [ROOT / "app.py", ROOT / "README.md", *DOCS.glob("*.md")]
    return sorted(p for p in files if p.is_file() and p.name != Path(__file__).name)  # not this file's examples


def flat(text: str) -> str:
    """Comment and docstring lines joined, so a citation broken over two lines reads as one."""
    return re.sub(r"\n\s*(?:#\s*)?", " ", text)


def anchors(doc: str) -> tuple[set[str], dict[str, str]]:
    """The identifiers a doc defines ("§2.6", "§3.3 A", "G8") and each section's text up to the next heading."""
    ids = set(G_ITEM.findall(doc))
    bodies: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = HEADING.match(line)
        if m:
            current = "§" + m["num"] + (f" {m['letter']}" if m["letter"] else "")
            ids.add(current)
            bodies[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            bodies[current] += line + "\n"
    return ids, bodies


def _expand(num: str, end: str | None) -> list[str]:
    if end is None:
        return [num]
    head, first = num.rsplit(".", 1) if "." in num else ("", num)
    end_head, last = end.rsplit(".", 1) if "." in end else ("", end)
    assert head == end_head, f"range §{num}-{end} spans sections"
    return [f"{head}.{i}" if head else str(i) for i in range(int(first), int(last) + 1)]


def unresolved(doc: str, refs: str) -> list[str]:
    """The references in `refs` (the text after "docs/<file>.md") that `doc` does not define."""
    ids, bodies = anchors(doc)
    missing = []
    for m in REF.finditer(refs):
        if m["g"]:
            wanted = [m["g"]]
        else:
            letters = re.findall(r"[A-D]", m["letters"] or "")
            nums = _expand(m["num"], m["end"])
            wanted = [f"§{n} {x}" for n in nums for x in letters] if letters else [f"§{n}" for n in nums]
        for ident in wanted:
            if ident not in ids:
                missing.append(ident)
            elif m["step"] and not re.search(rf"^{m['step']}\. ", bodies.get(ident, ""), re.M):
                missing.append(f"{ident} step {m['step']}")
    return missing


def citations() -> list[tuple[str, str, str]]:
    found = []
    for path in sources():
        for m in CITATION.finditer(flat(path.read_text(encoding="utf-8"))):
            found.append((path.relative_to(ROOT).as_posix(), m[1], m[2]))
    return found


def test_every_doc_citation_resolves():
    found = citations()
    cited = {name for _, name, refs in found if refs}
    assert {"mgie.md", "smartedit.md"} <= cited
    assert sum(1 for _, _, refs in found if refs) >= 30, "the citation scan found too few section references"
    problems = []
    for where, name, refs in found:
        doc = DOCS / name
        if not doc.is_file():
            problems.append(f"{where}: docs/{name} does not exist")
            continue
        missing = unresolved(doc.read_text(encoding="utf-8"), refs)
        if missing:
            problems.append(f"{where}: docs/{name}{refs} -> not in the doc: {', '.join(missing)}")
    assert not problems, "\n".join(problems)


def test_nothing_cites_files_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT).as_posix()}: {m[0]}"
        for path in sources()
        for m in OUTSIDE.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not hits, "\n".join(hits)


DOC = """# t
## §2 Inference
### §2.6 Steps
1. one
2. two
### §3.3 Keys
#### §3.3 A file a
#### §3.3 B file b
- **G8** the ban
"""


@pytest.mark.parametrize(
    "refs, missing",
    [
        (" §2.6, G8", []),
        (" §2.6 step 2", []),
        (" §3.3 A/B", []),
        (" §3.3 A and B, §2", []),
        (" §2.6 step 3", ["§2.6 step 3"]),
        (" §3.3 C", ["§3.3 C"]),
        (" §2.5-2.6", ["§2.5"]),
        (" G9, §4", ["G9", "§4"]),
    ],
)
def test_the_resolver_finds_missing_references(refs, missing):
    assert unresolved(DOC, refs) == missing


def test_the_scanner_reads_citations_broken_over_comment_lines():
    text = "x  # see (docs/mgie.md\n    # §2.6, G8) and docs/smartedit.md §3.3 B and C, step; docs/a.md §1 (x) and §2"
    assert [(m[1], m[2]) for m in CITATION.finditer(flat(text))] == [
        ("mgie.md", " §2.6, G8"),
        ("smartedit.md", " §3.3 B and C"),
        ("a.md", " §1 (x) and §2"),
    ]
