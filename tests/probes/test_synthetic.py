"""The synthetic dataset writer (probes.synthetic): reuse, atomic writes, settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes.synthetic import write_synthetic_dataset

SIZE = (64, 80)
FPS = 30


def _write(root: Path, **kwargs) -> Path:
    args = {"cameras": 2, "image_size": SIZE, "fps": FPS, "episodes": 3, "episode_length": 8, "seed": 0}
    args.update(kwargs)
    return write_synthetic_dataset(root, **args)


@pytest.fixture(scope="module")
def small_v30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset, written once for the module."""
    return _write(tmp_path_factory.mktemp("small") / "ds", cameras=1, episodes=2, episode_length=6)


def test_writer_reuses_a_complete_dataset_and_never_leaves_a_partial_one(
    tmp_path: Path, small_v30: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = small_v30 / "meta/info.json"
    before = info.stat().st_mtime_ns
    assert _write(small_v30, cameras=1, episodes=2, episode_length=6) == small_v30
    assert info.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="episodes"):
        _write(small_v30, cameras=1, episodes=3, episode_length=6)

    import probes.synthetic.episodes as episodes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(episodes, "write_parquet", interrupted)
    target = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _write(target, cameras=1, episodes=1)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_marker_records_every_setting_as_json(small_v30: Path) -> None:
    written = json.loads((small_v30 / "meta/synthetic.json").read_text())
    assert list(written) == [
        "cameras",
        "image_size",
        "fps",
        "episodes",
        "episode_length",
        "state_dim",
        "action_dim",
        "codec",
        "gop",
        "version",
        "image_storage",
        "episodes_per_file",
        "seed",
        "tasks",
        "chunks_size",
    ]
    assert written["image_size"] == list(SIZE)
    assert (written["cameras"], written["episodes"], written["episode_length"]) == (1, 2, 6)
    assert written["episodes_per_file"] is None and written["chunks_size"] == 1000
    assert isinstance(written["tasks"], list) and len(written["tasks"]) == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"episodes": 0}, "episodes must be a positive integer, got 0"),
        ({"fps": 2.5}, "fps must be a positive integer, got 2.5"),
        ({"cameras": -1}, "cameras must be a non-negative integer, got -1"),
        ({"version": "v1.6"}, "version must be one of"),
        ({"image_storage": "gif"}, "image_storage must be one of"),
        ({"codec": "vp9"}, "codec must be one of"),
        ({"image_size": (4, 80)}, r"image_size must be at least 8x8, got \(4, 80\)"),
        ({"image_size": (63, 80)}, r"image_size must be even for yuv420p video, got \(63, 80\)"),
        ({"version": "v2.1", "episodes_per_file": 2}, "episodes_per_file applies to v3.0 only"),
        ({"episodes_per_file": 0}, "episodes_per_file must be a positive integer, got 0"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _write(tmp_path / "ds", **overrides)
    assert list(tmp_path.iterdir()) == []
