"""Every pointer into the documentation resolves.

Module docstrings, notebooks, tests and the model card cite the method notes as
"docs/method.md section N". These tests read every tracked text file (``git ls-files``: Python,
notebooks, Markdown, the Makefile) and fail on

- a reference to the method notes that is not written as the path ``docs/method.md`` (a bare
  file name is a dead end for someone reading the file on GitHub or in an editor);
- a cited section ("section 4", "sections 2-4", "sections 1 and 3", "method notes 2") that is not
  a numbered heading of docs/method.md;
- a pointer to the developers' private notes outside the repository (the ``shared`` folder next
  to the checkout), which no user has;
- a relative Markdown link in README.md or docs/*.md whose target file does not exist.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD_DOC = ROOT / "docs/method.md"
TEXT_SUFFIXES = {".py", ".ipynb", ".md"}

# A path-like token ending in the method notes' file name, e.g. "docs/method.md",
# "../docs/method.md" or (wrongly) the bare file name.
METHOD_TOKEN = re.compile(r"[\w./-]*\bmethod\.md")
# What may follow a reference before the section numbers: punctuation, Markdown backticks,
# quotes, and the comment markers of a citation that wraps onto the next line.
NUMBER = r"\d+(?:\.\d+)*"
SECTION_AFTER = re.compile(
    rf"""^[`'"),\s#:]*(?:sections?|§)?\s*({NUMBER}(?:\s*(?:,|and|-|–|to)\s*{NUMBER})*)(?!\w|\.\d)""",
    re.IGNORECASE,
)
HEADING = re.compile(rf"^#{{2,4}}\s+({NUMBER})\.?\s", re.MULTILINE)
# Pointers to the private notes next to the checkout.
PRIVATE_NOTES = re.compile(r"\.\./shared\b|/work/shared\b|\bshared/docs\b")
# The bare file name, split in two so that a repository-wide search-and-replace of it leaves
# these tests alone.
BARE_NAME = "method.md"
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def tracked_text_files() -> list[Path]:
    """Tracked .py, .ipynb, .md files and the Makefile, except this file (whose examples and
    patterns name exactly what it looks for)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    this_file = Path(__file__).resolve()
    paths = [ROOT / p for p in out.split("\0") if p]
    return [
        p
        for p in paths
        if p.is_file()
        and (p.suffix in TEXT_SUFFIXES or p.name == "Makefile")
        and p.resolve() != this_file
    ]


def readable_text(path: Path) -> str:
    """The text a reader sees: a notebook's cells (sources joined), any other file as is."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return "\n\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells
        )
    return text


def expand_numbers(spec: str) -> list[str]:
    """'2-4' -> ['2', '3', '4']; '1 and 3' -> ['1', '3']; '3.2' -> ['3.2']."""
    numbers = []
    for part in re.split(r"\s*(?:,|and)\s*", spec.strip()):
        bounds = re.split(r"\s*(?:-|–|to)\s*", part)
        if len(bounds) == 2 and all(b.isdigit() for b in bounds):
            numbers += [str(n) for n in range(int(bounds[0]), int(bounds[1]) + 1)]
        else:
            numbers += [b for b in bounds if b]
    return numbers


def method_sections() -> set[str]:
    return set(HEADING.findall(METHOD_DOC.read_text(encoding="utf-8")))


def method_references(path: Path, text: str) -> list[tuple[int, str, list[str]]]:
    """(line, token, cited section numbers) for every reference to the method notes."""
    refs = []
    for m in METHOD_TOKEN.finditer(text):
        after = SECTION_AFTER.match(text[m.end() : m.end() + 80])
        sections = expand_numbers(after.group(1)) if after else []
        refs.append((text.count("\n", 0, m.start()) + 1, m.group(0), sections))
    return refs


def resolves_to_method_doc(path: Path, token: str) -> bool:
    """Written as a path to docs/method.md, from the repository root or from the file."""
    if not token.endswith("docs/method.md") and not (
        path.parent == METHOD_DOC.parent and token == "./method.md"
    ):
        return False
    candidates = [(ROOT / token).resolve(), (path.parent / token).resolve()]
    return METHOD_DOC.resolve() in candidates


def test_method_doc_has_the_numbered_sections():
    sections = method_sections()
    assert {"1", "2", "3", "4", "5", "6"} <= sections, sorted(sections)


def test_every_method_reference_is_a_path_to_an_existing_section():
    sections = method_sections()
    problems = []
    count = 0
    for path in tracked_text_files():
        for line, token, cited in method_references(path, readable_text(path)):
            count += 1
            where = f"{path.relative_to(ROOT)}:{line}: {token!r}"
            if not resolves_to_method_doc(path, token):
                problems.append(f"{where} is not a path to docs/method.md")
            problems += [f"{where} cites missing section {n}" for n in cited if n not in sections]
    assert count > 0, "no references found: the scanner is broken"
    assert not problems, "\n".join(problems)


def test_method_doc_cross_references_exist():
    text = METHOD_DOC.read_text(encoding="utf-8")
    sections = method_sections()
    cited = []
    for m in re.finditer(rf"\bsections?\s+({NUMBER}(?:\s*(?:,|and|-|–)\s*{NUMBER})*)", text):
        cited += expand_numbers(m.group(1))
    missing = sorted(set(cited) - sections)
    assert not missing, f"docs/method.md refers to its own missing sections {missing}"


def test_no_pointer_to_private_notes_outside_the_repository():
    hits = [
        f"{p.relative_to(ROOT)}: {m.group(0)!r}"
        for p in tracked_text_files()
        for m in PRIVATE_NOTES.finditer(readable_text(p))
    ]
    assert not hits, "\n".join(hits)


def test_relative_links_in_readme_and_docs_exist():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in MD_LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor on the same page
            file_part = target.split("#", 1)[0]
            if not (page.parent / file_part).exists():
                broken.append(f"{page.relative_to(ROOT)}: ({target})")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/method.md section 4.", ("docs/method.md", ["4"])),
        ("(docs/method.md,\n    section 2)", ("docs/method.md", ["2"])),
        ("(docs/method.md\n# section 2, steps 1-6)", ("docs/method.md", ["2"])),
        ("`docs/method.md` sections 2-4", ("docs/method.md", ["2", "3", "4"])),
        ("docs/method.md sections 1 and 3", ("docs/method.md", ["1", "3"])),
        ("docs/method.md section 3.2", ("docs/method.md", ["3.2"])),
        ("(docs/method.md 2)", ("docs/method.md", ["2"])),
        ('docs/method.md: the loss is on "the fine output"', ("docs/method.md", [])),
        (f"steps 1-6 of {BARE_NAME})", (BARE_NAME, [])),
    ],
)
def test_scanner_reads_the_citation_forms_in_use(text, expected):
    [(_, token, sections)] = method_references(ROOT / "x.py", text)
    assert (token, sections) == expected


def test_bare_or_wrong_paths_are_rejected():
    here = ROOT / "sketchedit" / "x.py"
    assert resolves_to_method_doc(here, "docs/method.md")
    assert resolves_to_method_doc(ROOT / "notebooks" / "x.ipynb", "../docs/method.md")
    assert resolves_to_method_doc(ROOT / "docs" / "README.md", "./method.md")
    assert not resolves_to_method_doc(here, BARE_NAME)
    assert not resolves_to_method_doc(ROOT / "docs" / "README.md", BARE_NAME)
    assert not resolves_to_method_doc(here, "docs/docs/method.md")
    assert not resolves_to_method_doc(here, "shared/docs/method.md")


def test_make_lab_allows_root_and_passes_extra_flags():
    """README: `make lab LAB_ARGS="..."`; Jupyter exits at once as root without --allow-root."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "lab", "LAB_ARGS=--port 8890 --no-browser"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    [lab_line] = [line for line in out.splitlines() if "jupyter lab" in line]
    assert "--port 8890 --no-browser" in lab_line
    assert lab_line.rstrip().endswith("notebooks/")
    assert ("--allow-root" in lab_line) == (os.getuid() == 0)


FIGURE_CALLS = ("save_figure(", "show_grid(", ".show(size", "plt.subplots(", "plt.figure(")
CAPTION = "*What the figure shows:*"


def notebook_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for c in cells:
        c["text"] = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    return cells


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_figure_has_a_sentence_under_it(path):
    cells = notebook_cells(path)
    missing = [
        f"cell {i} ({c.get('id')})"
        for i, c in enumerate(cells)
        if c["cell_type"] == "code"
        and any(call in c["text"] for call in FIGURE_CALLS)
        and not (
            i + 1 < len(cells)
            and cells[i + 1]["cell_type"] == "markdown"
            and cells[i + 1]["text"].startswith(CAPTION)
        )
    ]
    assert not missing, f"figures without a {CAPTION!r} sentence below: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_ends_with_two_or_three_exercises(path):
    last = notebook_cells(path)[-1]
    assert last["cell_type"] == "markdown" and last["text"].startswith("## Exercises"), path.name
    items = re.findall(r"^\d+\. ", last["text"], re.MULTILINE)
    assert 2 <= len(items) <= 3, f"{path.name}: {len(items)} exercises"
