"""The dataset reader (probes.dataset) against datasets written by probes.synthetic."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from probes.dataset import (
    DatasetError,
    FrameDataset,
    load_meta,
    resolve_dataset_root,
)
from probes.dataset.decode import BACKENDS, backend_error
from probes.synthetic import camera_keys, synthetic_frame, write_synthetic_dataset

SIZE = (64, 80)
FPS = 30
MATCH_MAE = 12.0  # decoded vs encoded frame, on 0..255: lossy but close
OTHER_MAE = 15.0  # decoded vs a frame three steps away: clearly different


def _write(root: Path, **kwargs) -> Path:
    args = {"cameras": 2, "image_size": SIZE, "fps": FPS, "episodes": 3, "episode_length": 8, "seed": 0}
    args.update(kwargs)
    return write_synthetic_dataset(root, **args)


def _mae(frame_chw: torch.Tensor, ref_hwc: np.ndarray) -> float:
    return float(np.abs(frame_chw.permute(1, 2, 0).numpy().astype(np.float64) - ref_hwc).mean())


def _assert_frames_match(ds: FrameDataset, idx: int, seed: int = 0, exact: bool = False) -> None:
    item = ds[idx]
    ep, fi = int(item["episode_index"]), int(item["frame_index"])
    length = ds.meta.episodes[ep].length
    written_order = camera_keys(len(ds.meta.camera_keys))  # the writer's camera numbering
    for key in ds.meta.camera_keys:
        cam = written_order.index(key)
        h, w, _ = ds.meta.camera_shapes[key]
        frame = item[key]
        assert frame.dtype == torch.uint8 and frame.shape == (3, h, w)
        same = _mae(frame, synthetic_frame(seed, cam, ep, fi, (h, w), FPS))
        other = _mae(frame, synthetic_frame(seed, cam, ep, (fi + 3) % length, (h, w), FPS))
        if exact:
            assert same == 0.0, (key, idx)
        assert same < MATCH_MAE, (key, idx, same)
        assert other > OTHER_MAE, (key, idx, other)


@pytest.fixture(scope="module")
def v30_multi_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 episodes, 2 per file, 2 files per chunk: data and videos spread over 3 files, 2 chunks."""
    root = tmp_path_factory.mktemp("v30") / "ds"
    return _write(root, episodes=5, episode_length=12, episodes_per_file=2, chunks_size=2)


@pytest.fixture(scope="module")
def small_v30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset for the broken-dataset cases, copied and damaged per test."""
    return _write(tmp_path_factory.mktemp("small") / "ds", cameras=1, episodes=2, episode_length=6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v30_frames_decode_to_what_was_encoded_across_files_and_chunks(
    v30_multi_file: Path, backend: str
) -> None:
    meta = load_meta(v30_multi_file)
    assert meta.version == "v3.0"
    assert meta.total_episodes == 5 and meta.total_frames == 60
    assert meta.camera_keys == sorted(camera_keys(2))
    assert meta.camera_codecs == {key: "av1" for key in camera_keys(2)}
    assert meta.camera_shapes == {key: (*SIZE, 3) for key in camera_keys(2)}
    assert (meta.state_dim, meta.action_dim) == (6, 6)
    files = {ep.data_file.relative_to(v30_multi_file).as_posix() for ep in meta.episodes}
    assert files == {
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
    }
    ds = FrameDataset(meta, chunk_size=4, video_backend=backend)
    assert len(ds) == 60
    for idx in (0, 5, 11, 12, 23, 30, 47, 48, 59):
        _assert_frames_match(ds, idx)


def test_v30_from_timestamp_locates_later_episodes_in_a_shared_video(v30_multi_file: Path) -> None:
    meta = load_meta(v30_multi_file)
    second_in_file = meta.episodes[3]  # episodes 2 and 3 share file-001
    assert (
        second_in_file.videos[meta.camera_keys[0]].path == meta.episodes[2].videos[meta.camera_keys[0]].path
    )
    for video in second_in_file.videos.values():
        assert video.from_timestamp == pytest.approx(12 / FPS)
    ds = FrameDataset(meta, chunk_size=1)
    item = ds[second_in_file.dataset_from_index]
    assert int(item["episode_index"]) == 3 and int(item["frame_index"]) == 0
    _assert_frames_match(ds, second_in_file.dataset_from_index)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v21_frames_decode_to_what_was_encoded(tmp_path: Path, backend: str) -> None:
    root = _write(tmp_path / "v21", version="v2.1")
    meta = load_meta(root)
    assert meta.version == "v2.1"
    assert meta.episodes[1].data_file == root / "data/chunk-000/episode_000001.parquet"
    video = meta.episodes[2].videos["observation.images.wrist"]
    assert video.path == root / "videos/chunk-000/observation.images.wrist/episode_000002.mp4"
    assert video.from_timestamp == 0.0
    ds = FrameDataset(root, chunk_size=3, with_task=True, video_backend=backend)
    for idx in (0, 7, 8, 15, 23):
        _assert_frames_match(ds, idx)
    assert ds[9]["task"] == meta.tasks[1]


def test_several_cameras_each_yield_one_frame(tmp_path: Path) -> None:
    root = _write(tmp_path / "cams", cameras=3, episodes=1)
    ds = FrameDataset(root, chunk_size=2)
    assert ds.meta.camera_keys == sorted(camera_keys(3))
    assert "observation.images.cam2" in ds.meta.camera_keys
    _assert_frames_match(ds, 5)


@pytest.mark.parametrize(("codec", "name"), [("libsvtav1", "av1"), ("h264", "h264"), ("hevc", "hevc")])
def test_each_codec_round_trips_through_a_shared_v30_video(tmp_path: Path, codec: str, name: str) -> None:
    root = _write(tmp_path / codec, cameras=1, episodes=2, codec=codec)
    meta = load_meta(root)
    assert meta.camera_codecs == {"observation.images.front": name}
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == name
    # Both decoders LeRobot uses give the same pixels (the same FFmpeg decode and RGB conversion).
    pyav = FrameDataset(meta, chunk_size=2, video_backend="pyav")
    torchcodec = FrameDataset(meta, chunk_size=2, video_backend="torchcodec")
    for idx in range(len(pyav)):
        _assert_frames_match(pyav, idx)
        key = meta.camera_keys[0]
        assert torch.equal(torchcodec[idx][key], pyav[idx][key]), (codec, idx)


def test_image_stored_cameras_decode_exactly(tmp_path: Path) -> None:
    root = _write(tmp_path / "img", image_storage="image", episodes_per_file=2)
    meta = load_meta(root)
    assert meta.camera_storage == {key: "image" for key in camera_keys(2)}
    assert meta.video_keys == [] and meta.camera_codecs == {key: None for key in camera_keys(2)}
    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    assert schema.field("observation.images.front").type == pa.struct(
        [("bytes", pa.binary()), ("path", pa.string())]
    )
    ds = FrameDataset(meta, chunk_size=2)
    for idx in (0, 9, 17, 23):
        _assert_frames_match(ds, idx, exact=True)


def test_action_chunk_is_clamped_and_padded_at_an_episode_end(v30_multi_file: Path) -> None:
    ds = FrameDataset(v30_multi_file, chunk_size=5)
    ep = ds.meta.episodes[2]
    table = pq.read_table(ep.data_file).to_pydict()
    rows = {index: i for i, index in enumerate(table["index"])}
    actions = np.asarray(table["action"], dtype=np.float32)
    states = np.asarray(table["observation.state"], dtype=np.float32)

    last = ep.dataset_to_index - 2  # two frames left in the episode
    item = ds[last]
    assert item["action"].shape == (5, 6) and item["action"].dtype == torch.float32
    assert item["action_is_pad"].tolist() == [False, False, True, True, True]
    expected = actions[[rows[last], rows[last + 1]] + [rows[last + 1]] * 3]
    np.testing.assert_array_equal(item["action"].numpy(), expected)
    np.testing.assert_array_equal(item["observation.state"].numpy(), states[rows[last]])
    assert item["observation.state"].dtype == torch.float32

    middle = ds[ep.dataset_from_index + 1]
    assert not middle["action_is_pad"].any()
    assert int(middle["index"]) == ep.dataset_from_index + 1
    assert float(middle["timestamp"]) == pytest.approx(1 / FPS)


@pytest.mark.parametrize(
    ("backend", "start"), [("pyav", "spawn"), ("torchcodec", "spawn"), ("torchcodec", "fork")]
)
def test_dataset_feeds_a_dataloader_with_two_workers(v30_multi_file: Path, backend: str, start: str) -> None:
    ds = FrameDataset(v30_multi_file, chunk_size=4, with_task=True, video_backend=backend)
    ds[0]  # opens a data file (and torchcodec's decoders) here: workers must not share them
    assert len(pickle.dumps(ds)) < 50_000
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context=start
    )
    seen = []
    for batch in loader:
        n = len(batch["index"])
        assert batch["observation.images.front"].shape == (n, 3, *SIZE)
        assert batch["observation.images.front"].dtype == torch.uint8
        assert batch["action"].shape == (n, 4, 6) and batch["action_is_pad"].shape == (n, 4)
        assert len(batch["task"]) == n and all(isinstance(t, str) for t in batch["task"])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(ds)))


def test_stats_come_from_stats_json_else_from_the_data(tmp_path: Path, small_v30: Path) -> None:
    root = shutil.copytree(small_v30, tmp_path / "ds")
    from_json = FrameDataset(root, chunk_size=1).stats
    (root / "meta/stats.json").unlink()
    from_data = FrameDataset(root, chunk_size=1).stats
    for key in ("observation.state", "action"):
        assert from_json[key].mean.shape == (6,) and from_json[key].std.dtype == torch.float32
        torch.testing.assert_close(from_json[key].mean, from_data[key].mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(from_json[key].std, from_data[key].std, rtol=1e-4, atol=1e-4)


def test_repo_id_resolves_through_hf_lerobot_home(
    tmp_path: Path, small_v30: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "lerobot_home"
    shutil.copytree(small_v30, home / "someone" / "pick_cube")
    monkeypatch.setenv("HF_LEROBOT_HOME", str(home))
    assert resolve_dataset_root("someone/pick_cube") == home / "someone" / "pick_cube"
    assert resolve_dataset_root(str(small_v30)) == small_v30
    with pytest.raises(DatasetError) as err:
        resolve_dataset_root("someone/not_downloaded")
    message = str(err.value)
    assert "\n" not in message and str(home / "someone" / "not_downloaded") in message


# ----------------------------------------------------------------------------------------------
# Broken datasets: each raises DatasetError with a one-line message naming the file.
# ----------------------------------------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit_info(root: Path, change) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def _shift_from_timestamp(root: Path) -> None:
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    name = "videos/observation.images.front/from_timestamp"
    shifted = pa.array([t + 0.5 / FPS for t in table.column(name).to_pylist()], type=pa.float64())
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, shifted), path)


VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"
DATA = "data/chunk-000/file-000.parquet"

BREAKAGES = {
    "missing root": (lambda root: shutil.rmtree(root), ""),
    "missing info.json": (lambda root: (root / "meta/info.json").unlink(), "meta/info.json"),
    "malformed info.json": (
        lambda root: (root / "meta/info.json").write_text('{"fps": 30,'),
        "meta/info.json",
    ),
    "unsupported version": (
        lambda root: _edit_info(root, lambda info: info.update(codebase_version="v1.6")),
        "meta/info.json",
    ),
    "missing feature": (
        lambda root: _edit_info(root, lambda info: info["features"].pop("observation.state")),
        "meta/info.json",
    ),
    "truncated mp4": (lambda root: _truncate(root / VIDEO), VIDEO),
    "missing mp4": (lambda root: (root / VIDEO).unlink(), VIDEO),
    "missing parquet": (lambda root: (root / DATA).unlink(), DATA),
    "truncated parquet": (lambda root: _truncate(root / DATA), DATA),
    "missing episode metadata": (lambda root: shutil.rmtree(root / "meta/episodes"), "meta/episodes"),
    "timestamp off the frame grid": (_shift_from_timestamp, VIDEO),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_broken_dataset_raises_one_line_error_naming_the_file(
    tmp_path: Path, small_v30: Path, case: str
) -> None:
    root = shutil.copytree(small_v30, tmp_path / "ds")
    breakage, culprit = BREAKAGES[case]
    breakage(root)
    with pytest.raises(DatasetError) as err:
        ds = FrameDataset(root, chunk_size=3)
        for idx in range(len(ds)):
            ds[idx]
    message = str(err.value)
    assert "\n" not in message
    assert str(root / culprit) in message, message


@pytest.mark.parametrize("backend", BACKENDS)
def test_timestamp_past_the_end_of_a_video_fails_at_decode_naming_file_and_time(
    tmp_path: Path, small_v30: Path, backend: str
) -> None:
    root = shutil.copytree(small_v30, tmp_path / "ds")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    name = "videos/observation.images.front/from_timestamp"
    late = pa.array([t + 10.0 for t in table.column(name).to_pylist()], type=pa.float64())
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, late), path)
    ds = FrameDataset(root, chunk_size=1, video_backend=backend)
    with pytest.raises(DatasetError) as err:
        ds[0]
    message = str(err.value)
    assert "\n" not in message and str(root / VIDEO) in message and "10.000000" in message


def test_v21_missing_episodes_jsonl_is_a_dataset_error(tmp_path: Path) -> None:
    root = _write(tmp_path / "v21", version="v2.1", cameras=1, episodes=1, episode_length=4)
    (root / "meta/episodes.jsonl").unlink()
    with pytest.raises(DatasetError, match="episodes.jsonl"):
        load_meta(root)


def test_torchcodec_loads_here_as_the_tests_need() -> None:
    # The tests above decode with torchcodec for real: it must load (FFmpeg's shared libraries,
    # installed by bash scripts/setup.sh --test), never be skipped.
    assert backend_error("torchcodec") is None, backend_error("torchcodec")
    assert backend_error("pyav") is None
    assert "unknown video backend" in (backend_error("opencv") or "")


def test_the_dataset_probe_names_a_decoder_that_cannot_decode_the_dataset(tmp_path: Path) -> None:
    from probes.info import undecodable

    # This HEVC file's stream reports 30.0037 frames/s: torchcodec's approximate seek (what LeRobot
    # asks for) lands a frame off, and lerobot-train would stop on it; PyAV decodes it exactly.
    hevc = _write(tmp_path / "hevc", image_size=(48, 64), episodes=4, episode_length=40, codec="hevc",
                  episodes_per_file=2, seed=3)  # fmt: skip
    failed = undecodable(load_meta(hevc))
    assert set(failed) == {"torchcodec"} and "no frame within" in failed["torchcodec"], failed
    av1 = _write(tmp_path / "av1", episodes=4, episode_length=40, episodes_per_file=2)
    assert undecodable(load_meta(av1)) == {}
