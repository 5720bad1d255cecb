"""The versioned profile: what cannot be read is refused in one line."""

from __future__ import annotations

import json

import pytest

from autotune.errors import UserError
from autotune.outputs.profile import read_profile


def test_a_profile_of_another_version_is_refused(tmp_path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "act.json").write_text(json.dumps({"version": 999}))
    with pytest.raises(UserError, match="version"):
        read_profile(tmp_path, "act")
    (tmp_path / "profiles" / "act.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        read_profile(tmp_path, "act")
    assert read_profile(tmp_path, "smolvla") is None


def test_a_profile_that_is_json_but_lacks_fields_is_one_line(tmp_path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "act.json").write_text(json.dumps({"version": 1, "policy": "act"}))
    with pytest.raises(UserError, match=r"an autotune profile without .* move it aside") as err:
        read_profile(tmp_path, "act")
    assert "\n" not in str(err.value)
