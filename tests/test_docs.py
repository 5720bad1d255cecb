"""The README stays a landing page, its output sample stays in place, and every relative link in
the README, docs/ and benchmarks/README.md lands on a file and, where it names one, a heading."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED = [README, *DOCS, ROOT / "benchmarks" / "README.md"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", flags=re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", flags=re.S)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", flags=re.M)


def prose(text: str) -> str:
    """The text outside fenced blocks and code spans, where links and headings live."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but for hyphens (and
    underscores, which GitHub keeps), spaces to hyphens; backticks and link targets dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_a_landing_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail into docs/"


SAMPLE_PROFILE = ROOT / "docs" / "sample" / "act-cpu-profile.json"


def readme_sample() -> str:
    found = re.search(
        r"^<!-- sample:begin -->\n```text\n(.*?)\n```\n<!-- sample:end -->$",
        README.read_text(),
        flags=re.M | re.S,
    )
    assert found, "README.md: no ```text block between <!-- sample:begin --> and <!-- sample:end -->"
    return found.group(1)


def test_the_readme_sample_is_what_autotune_prints_for_its_profile() -> None:
    """The sample was captured from a real run; its profile is committed beside the docs, and the
    lines must be the ones print_profile makes of it, so the sample cannot drift from the code."""
    from autotune.outputs.profile import Profile
    from autotune.outputs.summary import profile_lines

    profile = Profile.from_dict(json.loads(SAMPLE_PROFILE.read_text()))
    assert readme_sample().splitlines() == profile_lines(profile)


def test_every_docs_page_has_a_title_and_is_linked_from_the_readme() -> None:
    assert DOCS
    readme_links = {(README.parent / unquote(t.split("#")[0])).resolve() for t in relative_links(README)}
    for page in DOCS:
        assert page.read_text().startswith("# "), f"{page.name}: does not start with a # title"
        assert page.resolve() in readme_links, f"{page.name}: not linked from README.md"


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading in {linked.relative_to(ROOT)}")
    assert not broken, broken


def test_slug_follows_github() -> None:
    assert slug("What `autotune run` does") == "what-autotune-run-does"
    assert slug("The profile: `results/profiles/<policy>.json`") == "the-profile-resultsprofilespolicyjson"
    assert slug("With `--verify`, runs that command") == "with---verify-runs-that-command"
    assert slug("Already train with LeRobot?") == "already-train-with-lerobot"
