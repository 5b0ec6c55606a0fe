"""The documentation: README.md and docs/*.md are renderings of docs/src/ whose numbers come from results files
in git (`make docs`, tools/docs.py), checked at the commit under test; the README stays short and links every
page."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKE = ["make", "-s", f"BIN={Path(sys.executable).parent}", "-o", "setup"]


def docs_module():
    spec = importlib.util.spec_from_file_location("caft_docs_tool", REPO / "tools" / "docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The commit under test as a clone has it (the workspace may hold a profile's or an experiment's results)."""
    dest = tmp_path_factory.mktemp("docs") / "caft"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    return dest


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_make_docs_reproduces_every_committed_page(clone):
    proc = subprocess.run([*MAKE, "docs"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pages = len(list((clone / "docs" / "src").glob("*.md")))
    assert proc.stdout.strip() == f"wrote {pages} pages (0 changed)"
    assert git(clone, "status", "--porcelain") == ""


def test_a_page_edited_by_hand_or_a_changed_result_is_caught(clone, tmp_path):
    work = tmp_path / "caft"
    subprocess.run(["git", "clone", "-q", str(clone), str(work)], check=True)
    env = ["-c", "user.email=t@t", "-c", "user.name=t"]
    readme = work / "README.md"
    readme.write_text(readme.read_text().replace("caft", "CAFT", 1))
    report = work / "reports" / "report.json"
    report.write_text(report.read_text().replace('"balanced_set_accuracy": 0.', '"balanced_set_accuracy": 0.9', 1))
    git(work, *env, "commit", "-qam", "edit by hand")
    proc = subprocess.run(
        [sys.executable, "tools/docs.py", "--check", "--rev", "HEAD"], cwd=work, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "out of date (run `make docs`): README.md, docs/demo.md"


def test_the_readme_is_short_and_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[a-z_-]+\.md)\)", readme))
    assert linked == {f"docs/{p.name}" for p in (REPO / "docs" / "src").glob("*.md") if p.name != "README.md"}


def test_numbers_are_written_as_the_tables_write_them():
    docs = docs_module()
    assert docs.signed(-0.05208) == "−0.052"
    assert docs.signed(0.1875) == "+0.188"
    assert docs.percent(0.3889) == "38.9 %"
    assert docs.thousands(2515.0) == "2,515"
    assert docs.duration(1013.4) == "16 min 53 s"
    assert docs.duration(42) == "42 s"


def test_a_block_quotes_a_report_up_to_the_end_of_its_table():
    docs = docs_module()
    report = "# t\n\nIntro line:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nAfter.\n- **x**: 0.5\n"
    quote = docs.block(lambda path: report)
    assert quote("r.md", "Intro") == "Intro line:\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert quote("r.md", "- **x**", table=False) == "- **x**: 0.5"
    with pytest.raises(ValueError, match="r.md: no line starts with 'Missing'"):
        quote("r.md", "Missing")
