"""Every relative link in the README and docs/ resolves to a file the project has (and its #anchor, where it
names one, to a heading of that file)."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [PROJECT / "README.md", *sorted((PROJECT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address or mailto: not the project's
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(PROJECT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(PROJECT)}: {target} (no such heading)")
    assert broken == []


EXAMPLES = {"profiles/mixes/mine.toml"}  # files the README tells a user to make
CITED = re.compile(r"`((?:docs|engine|lab|profiles|scripts|tests|sparknet_tui|benchmarks|\.ci)/[\w./*-]*[\w/*])")


def test_every_project_file_the_readme_and_docs_name_exists():
    """A path written in code style (`docs/lab/quality.md`, `engine/kernels/gelu.py`) names a file or folder
    of the project, or a glob that matches one."""
    pages = [PROJECT / "README.md", *sorted((PROJECT / "docs").rglob("*.md"))]
    missing = []
    for page in pages:
        for cited in CITED.findall(page.read_text(encoding="utf-8")):
            if cited not in EXAMPLES and not any(PROJECT.glob(cited.rstrip("/"))):
                missing.append(f"{page.relative_to(PROJECT)}: {cited}")
    assert missing == []


SOURCE_CITED = re.compile(r"\b((?:engine|sparknet_tui|lab|scripts|docs|profiles)/[\w/.-]*\w\.(?:py|md|toml))\b")


def test_every_project_file_the_code_names_exists():
    """A comment or docstring that points to another file (`engine/kernels/gelu.py`) points to one the project
    has: moving a module moves the pointers to it."""
    sources = [p for folder in ("engine", "sparknet_tui", "lab", "scripts") for p in (PROJECT / folder).rglob("*.py")]
    missing = [f"{p.relative_to(PROJECT)}: {cited}" for p in sources
               for cited in SOURCE_CITED.findall(p.read_text(encoding="utf-8"))
               if not (PROJECT / cited).exists() and not (p.parent / cited).exists()]
    assert missing == []


def test_no_page_names_the_machine_kinds_figures_were_measured_on():
    """Pages name a GPU and its software, never the name a lending service gave the machine."""
    pages = [PROJECT / "README.md", *sorted((PROJECT / "docs").rglob("*.md"))]
    named = [f"{p.relative_to(PROJECT)}: {m}" for p in pages
             for m in re.findall(r"nvidia-h[0-9]{3}(?:-x[0-9])?", p.read_text(encoding="utf-8"))]
    assert named == []
