"""The documentation stays in step with the code: every CSV column and profile field is in the
reference (docs/reference.md), and CI runs exactly the README's test command."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from autotune.machine.fingerprint import Fingerprint
from autotune.outputs.profile import Comparison, Conditions, Profile
from autotune.outputs.results import FILES
from autotune.tuning.memory_model import MemoryModel

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def in_reference(name: str) -> bool:
    return f"`{name}`" in REFERENCE


def test_every_csv_column_is_in_the_reference() -> None:
    missing = {f: [c for c in cols if not in_reference(c)] for f, cols in FILES.items()}
    assert not any(missing.values()), missing


def test_every_profile_field_is_in_the_reference() -> None:
    for cls in (Profile, Conditions, Fingerprint, MemoryModel, Comparison):
        missing = [f.name for f in dataclasses.fields(cls) if not in_reference(f.name)]
        assert not missing, (cls.__name__, missing)


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"^(bash scripts/setup\.sh (?:--test )?&& \S.*?)\s+#", README, flags=re.M)
    assert len(commands) == 2, commands
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
