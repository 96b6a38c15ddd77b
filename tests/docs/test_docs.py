"""The documentation against the repository (fast, no services).

- Every relative link in README.md and docs/**/*.md names a file or directory that exists (anchors are not
  checked); links outside the repository are allowed only where listed, and docs/design.md has none.
- Every ``TIDINGS_*`` variable the README and docs name is one Tidings reads: a ``Settings`` field
  (``TIDINGS_<FIELD>``, or ``TIDINGS_<FIELD>_FILE``), or one of the few read elsewhere (allow-listed below
  with the reason, and checked to still be read where the reason says).
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from tidings.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
VARIABLE = re.compile(r"\bTIDINGS_[A-Z0-9_]*[A-Z0-9]\b")

# Variables read outside Settings: name -> (the file that reads it, why it is not a setting).
ELSEWHERE = {
    "TIDINGS_PG_PARTITIONS": (
        "src/tidings/backends/sql/postgres/database.py",
        "read when a PostgreSQL namespace is created",
    ),
    "TIDINGS_BENCH_PROFILE": (
        "src/tidings/bench/harness.py",
        "a benchmark-suite switch, not a server setting",
    ),
    "TIDINGS_BENCH_SWITCH_INTERVAL": ("src/tidings/bench/stack.py", "a benchmark experiment knob"),
    "TIDINGS_EGRESS_ALLOW": ("src/tidings/channels/egress.py", "read by the channels' egress policy"),
    "TIDINGS_TEST_REQUIRE": ("tests", "read by the test suite: fail instead of skipping without services"),
    "TIDINGS_CHROMIUM": ("tests/browser/conftest.py", "read by the browser tests: where Chromium is"),
    "TIDINGS_DEBUG": ("src/tidings/cli.py", "the command line's --debug: a traceback instead of one line"),
}


def _prose(path: Path) -> str:
    """The file without fenced code blocks (commands and examples there are not links)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in _links(path):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_design_links_nothing_outside_the_repository() -> None:
    outside = [t for t in _links(ROOT / "docs" / "design.md") if re.match(r"[a-z]+:", t)]
    assert not outside


def _settings_variables() -> set[str]:
    names = {f"TIDINGS_{f.name.upper()}" for f in fields(Settings)}
    return names | {f"{name}_FILE" for name in names}


def test_every_variable_the_docs_name_is_read() -> None:
    known = _settings_variables() | set(ELSEWHERE)
    unknown = {
        f"{name} ({path.relative_to(ROOT)})"
        for path in DOCS
        for name in VARIABLE.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(ELSEWHERE))
def test_each_allow_listed_variable_is_still_read_where_its_reason_says(name: str) -> None:
    where = ROOT / ELSEWHERE[name][0]
    files = [where] if where.is_file() else sorted(where.rglob("*.py"))
    assert any(name in file.read_text() for file in files), f"{name} is no longer read in {where}"


def test_the_plans_shown_in_the_design_are_what_tidings_plan_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/design.md shows `tidings plan` runs with their output: each must be the command's output today."""
    from tidings.plan.command import main

    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / "design.md").read_text()
    blocks = re.findall(r"```console\n\$ tidings plan (.+?)\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    for args, shown in blocks:
        assert main(args.split()) == 0
        assert capsys.readouterr().out == shown, (
            f"docs/design.md: the output of `tidings plan {args}` changed"
        )
