"""The docs hold to the code: every option and command they show exists and parses, every link resolves.

Run by hand in a fresh clone, the doc pages' commands worked; these checks keep a renamed option or a moved
heading from breaking them silently later.
"""

import re
import shlex
from pathlib import Path

import pytest

from pytest_axion.cli import build_parser
from pytest_axion.options import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
                *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _command_lines(page: Path) -> list[str]:
    """Commands in indented code blocks (the docs' command style), comments dropped."""
    lines = []
    for line in page.read_text().splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            command = line.strip().split("  #", 1)[0].strip()
            if command.startswith((".venv/bin/", "python3 ", "HW=", "VERSION=", "MODEL=")):
                lines.append(command)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_every_option_the_docs_name_exists_and_the_readme_table_lists_them_all():
    known = {spec.flag for spec in OPTIONS}
    named = {(page, flag) for page in PAGES for flag in re.findall(r"--axion-[a-z0-9-]*[a-z0-9]", page.read_text())}
    unknown = sorted(f"{_name(page)}: {flag}" for page, flag in named if flag not in known)
    assert not unknown, unknown
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `--axion-")]
    listed = {re.match(r"\| `(--axion-[a-z0-9-]+)", line).group(1) for line in table}
    assert listed == known, sorted(known ^ listed)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_pytest_axion_command_in_the_docs_parses(page):
    parser = build_parser()
    for line in _command_lines(page):
        for part in re.split(r"&&|\|", line):
            words = shlex.split(part)
            if words and words[0].endswith("bin/pytest-axion"):
                args = words[1:]
                if args[:1] in (["refresh"], ["ab"]) and "--" in args:
                    args = args[:args.index("--")]   # what follows goes to pytest
                try:
                    parser.parse_args(args)
                except SystemExit:
                    pytest.fail(f"{_name(page)}: `{part.strip()}` does not parse")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)   # a pasted summary's links are examples
    for target in LINK.findall(prose):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {_name(linked)}")
    assert not broken, f"{_name(page)}: {broken}"


def test_the_docs_show_every_command_of_pytest_axion():
    parts = [part.strip() for page in PAGES for line in _command_lines(page) for part in re.split(r"&&|\|", line)]
    shown = {shlex.split(part)[1] for part in parts if part.startswith(".venv/bin/pytest-axion ")}
    assert shown == {"validate", "show", "compare", "refresh", "ab", "hardware"}


def test_the_checks_can_fail(tmp_path):
    """A link to a missing heading and a misspelled command are caught, not passed over."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[x](#no-such-heading)\n\n    .venv/bin/pytest-axion shwo\n")
    assert "no-such-heading" not in _anchors(page) and "title" in _anchors(page)
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split(_command_lines(page)[0])[1:])
