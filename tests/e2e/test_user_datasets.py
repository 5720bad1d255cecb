"""`autotune run --dataset` on datasets as users have them, written by the tests: LeRobot v3.0
and v2.1, several cameras, AV1, H.264 and HEVC, cameras stored as images, a repo id in the local
LeRobot cache; and broken datasets, which fail in one line naming the file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from probes.synthetic import write_synthetic_dataset
from tests.cli import SMALL_ACT, autotune, set_flags

pytestmark = pytest.mark.slow

SMALL_ACT_FLAGS = set_flags(SMALL_ACT)
QUICK = [
    "--trials",
    "1",
    "--soak-steps",
    "0",  # no soak: what these runs check is the data; the soak's own checks are in test_run.py
    "--throughput-points",
    "1",
    "--max-batch",
    "1",  # one batch probe: what these runs check is the data
    "--trainer-only",
    "--no-estimate",  # the estimate's own tests are in tests/probes/test_estimate.py and test_run.py
]


def run_on(dataset: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return autotune(
        "run", "--policy", "act", "--device", "cpu", "--memory-limit", "1GiB", "--dataset", dataset,
        *QUICK, *SMALL_ACT_FLAGS, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("version", "cameras", "codec", "storage", "size", "by_repo_id"),
    [
        # Named by its repo id, found in the local LeRobot cache ($HF_LEROBOT_HOME).
        ("v2.1", 3, "h264", "video", (40, 56), True),
        ("v3.0", 2, "hevc", "video", (48, 64), False),
        ("v3.0", 1, "libsvtav1", "image", (32, 48), False),
    ],
)
def test_a_users_dataset_tunes_end_to_end_with_its_own_shapes(
    tmp_path: Path,
    version: str,
    cameras: int,
    codec: str,
    storage: str,
    size: tuple[int, int],
    by_repo_id: bool,
) -> None:
    home = tmp_path / "lerobot-home"
    data = write_synthetic_dataset(
        home / "me" / "pick_cube", cameras=cameras, image_size=size, fps=30, episodes=4,
        episode_length=40, state_dim=7, action_dim=5, codec=codec, version=version,
        image_storage=storage, episodes_per_file=2 if version == "v3.0" else None, seed=3,
    )  # fmt: skip
    if by_repo_id:
        proc = run_on("me/pick_cube", tmp_path, env={"HF_LEROBOT_HOME": str(home)})
    else:
        proc = run_on(str(data), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads((tmp_path / "results" / "profiles" / "act.json").read_text())
    assert profile["conditions"]["cameras"] == cameras
    assert profile["conditions"]["image_size"] == list(size)
    assert (profile["conditions"]["state_dim"], profile["conditions"]["action_dim"]) == (7, 5)
    assert profile["conditions"]["dataset_kind"] == "user"
    assert profile["loader_model"]["decode_s_per_sample"] > 0
    trials = pd.read_csv(tmp_path / "results" / "worker_trials.csv")
    assert (trials.status == "ok").all() and (trials.decode_s_per_sample > 0).all()
    if by_repo_id:
        assert "--dataset.repo_id=me/pick_cube" in proc.stdout
    else:
        assert f"--dataset.root={data}" in proc.stdout
    assert "estimated on the meta device" not in proc.stderr  # --no-estimate: the search starts blind
    assert not (tmp_path / "results" / "datasets").exists()  # the user's data is used as it is
    command = proc.stdout.strip().splitlines()[-1]
    if codec == "hevc":
        # torchcodec's approximate seek (LeRobot's, 0.11 and 0.17 alike) lands a frame off in this
        # HEVC file, where lerobot-train would stop: the workers read with PyAV, and the command
        # asks for it.
        assert profile["video_backend"] == "pyav" and profile["video_backend_default"] == "torchcodec"
        assert (
            "--dataset.video_backend=pyav" in command
            and "cannot decode this dataset" in profile["video_backend_note"]
        )
        assert set(trials.video_backend) == {"pyav"}
    elif storage == "video":
        assert profile["video_backend"] == "torchcodec" and "--dataset.video_backend" not in command


def _dataset(tmp_path: Path) -> Path:
    return write_synthetic_dataset(
        tmp_path / "data", cameras=2, image_size=(32, 48), fps=30, episodes=2, episode_length=30, seed=2
    )


def _assert_clean_failure(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("autotune: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_a_truncated_video_is_named(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    video = next((data / "videos").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    _assert_clean_failure(run_on(str(data), tmp_path), video.name)
    assert not (tmp_path / "results" / "profiles").exists()


def test_a_missing_parquet_is_named(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    parquet = next((data / "data").rglob("*.parquet"))
    parquet.unlink()
    _assert_clean_failure(run_on(str(data), tmp_path), parquet.name)


def test_malformed_info_json_is_named(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    (data / "meta" / "info.json").write_text("{ not json")
    _assert_clean_failure(run_on(str(data), tmp_path), "info.json")


def test_cameras_of_different_shapes_are_refused_for_act(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    info_path = data / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    wrist = next(k for k in info["features"] if k.endswith("wrist"))
    info["features"][wrist]["shape"] = [64, 96, 3]
    info["features"][wrist].setdefault("info", {}).update({"video.height": 64, "video.width": 96})
    info_path.write_text(json.dumps(info))
    proc = run_on(str(data), tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "differ" in proc.stderr or "shape" in proc.stderr
