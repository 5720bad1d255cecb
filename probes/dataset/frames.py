"""The dataset as a torch ``Dataset``: each frame with its action chunk and camera frames, as LeRobot yields it."""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from probes.dataset.decode import TOLERANCE_S, decode_image, decode_video_frame
from probes.dataset.errors import REFETCH_HINT, dataset_error, reason
from probes.dataset.files import read_parquet, read_parquet_schema_names, vector_column
from probes.dataset.locate import resolve_dataset_root
from probes.dataset.meta import load_meta
from probes.dataset.records import DatasetMeta, EpisodeRecord
from probes.dataset.stats import load_stats
from probes.keys import ACTION, ACTION_IS_PAD, STATE, TASK
from probes.train_step import FeatureStats


@dataclass
class _DataFile:
    """One data parquet loaded in this process: its low-dimensional columns, images on demand.

    Arrays are ordered by global ``index``; ``file_rows`` maps back to the file's own row order
    when the file was not already sorted.
    """

    path: Path
    index: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    timestamp: np.ndarray
    task_index: np.ndarray
    state: np.ndarray
    action: np.ndarray
    image_keys: list[str]
    file_rows: np.ndarray | None = None
    parquet: Any = None  # pyarrow.parquet.ParquetFile, opened when an image is first read
    row_group_starts: list[int] = field(default_factory=list)
    row_groups: OrderedDict = field(default_factory=OrderedDict)  # small LRU of image row groups
    first_index: int | None = field(init=False, default=None)  # row = index - first_index if contiguous

    def __post_init__(self) -> None:
        n = len(self.index)
        contiguous = n > 0 and int(self.index[-1]) - int(self.index[0]) == n - 1
        self.first_index = int(self.index[0]) if contiguous else None

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows (in index order) holding the global ``indices``; DatasetError if one is absent."""
        n = len(self.index)
        if self.first_index is not None:
            rows = indices - self.first_index
            ok = (rows >= 0) & (rows < n)
        else:
            rows = np.minimum(np.searchsorted(self.index, indices), max(n - 1, 0))
            ok = self.index[rows] == indices if n else np.zeros(len(indices), dtype=bool)
        if not ok.all():
            raise dataset_error(self.path, f"has no row with index {int(indices[~ok][0])}", REFETCH_HINT)
        return rows

    def image(self, row: int, key: str, root: Path) -> torch.Tensor:
        import pyarrow as pa
        import pyarrow.parquet as pq

        file_row = int(self.file_rows[row]) if self.file_rows is not None else row
        try:
            if self.parquet is None:
                self.parquet = pq.ParquetFile(self.path)
                md = self.parquet.metadata
                starts, total = [], 0
                for g in range(md.num_row_groups):
                    starts.append(total)
                    total += md.row_group(g).num_rows
                self.row_group_starts = starts
            group = bisect.bisect_right(self.row_group_starts, file_row) - 1
            table = self.row_groups.get(group)
            if table is None:
                table = self.parquet.read_row_group(group, columns=self.image_keys)
                self.row_groups[group] = table
                while len(self.row_groups) > 2:
                    self.row_groups.popitem(last=False)
            value = table.column(key)[file_row - self.row_group_starts[group]].as_py()
        except (pa.ArrowException, OSError) as exc:
            raise dataset_error(self.path, f"cannot read {key!r} ({reason(exc)})", REFETCH_HINT) from exc
        return decode_image(value, root, self.path, file_row, key)


def _load_data_file(path: Path, meta: DatasetMeta) -> _DataFile:
    import pyarrow as pa

    columns = ["index", "episode_index", "frame_index", "timestamp", "task_index", STATE, ACTION]
    table = read_parquet(path, columns)
    if meta.image_keys:
        names = read_parquet_schema_names(path)
        for key in meta.image_keys:
            if key not in names:
                raise dataset_error(path, f"no column {key!r}", REFETCH_HINT)

    def scalar(name: str, dtype: type) -> np.ndarray:
        try:
            return table.column(name).to_numpy().astype(dtype, copy=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise dataset_error(
                path, f"column {name!r} is not a plain number column ({reason(exc)})", REFETCH_HINT
            ) from exc

    arrays = {
        "index": scalar("index", np.int64),
        "episode_index": scalar("episode_index", np.int64),
        "frame_index": scalar("frame_index", np.int64),
        "timestamp": scalar("timestamp", np.float32),
        "task_index": scalar("task_index", np.int64),
        "state": vector_column(table, STATE, path),
        "action": vector_column(table, ACTION, path),
    }
    if arrays["state"].shape[1:] != (meta.state_dim,) or arrays["action"].shape[1:] != (meta.action_dim,):
        raise dataset_error(
            path,
            f"state/action widths {arrays['state'].shape[1:]}/{arrays['action'].shape[1:]} differ from "
            f"info.json ({meta.state_dim}/{meta.action_dim})",
            REFETCH_HINT,
        )
    file_rows = None
    if np.any(np.diff(arrays["index"]) <= 0):
        file_rows = np.argsort(arrays["index"], kind="stable")
        arrays = {name: values[file_rows] for name, values in arrays.items()}
        if np.any(np.diff(arrays["index"]) == 0):
            raise dataset_error(path, "holds the same index twice", REFETCH_HINT)
    data = _DataFile(path=path, image_keys=list(meta.image_keys), file_rows=file_rows, **arrays)
    # Every episode that points at this file must find its first and last rows here.
    for ep in meta.episodes:
        if ep.data_file != path:
            continue
        rows = data.rows(np.array([ep.dataset_from_index, ep.dataset_to_index - 1], dtype=np.int64))
        if (data.episode_index[rows] != ep.episode_index).any():
            raise dataset_error(
                path, f"rows of episode {ep.episode_index} do not match meta/episodes", REFETCH_HINT
            )
    return data


class FrameDataset(Dataset):
    """A LeRobot dataset as a map-style torch Dataset yielding what LeRobot's loader yields.

        Each item: every camera as uint8 (3, H, W) at the sample's timestamp, ``observation.state``
        (S,), an ``action`` chunk (chunk_size, A) over delta timestamps ``i / fps`` clamped to the
        episode with ``action_is_pad``, ``index``, ``episode_index``, ``frame_index``, ``task_index``,
        ``timestamp`` and, when ``with_task``, the task string. Video cameras are decoded in parallel
        threads with ``video_backend`` as LeRobot does (PyAV opens the file for each query; torchcodec
    keeps a decoder per file open in each process). Data parquet files are loaded
        lazily and cached per process; pickling drops the cache, so spawned workers start light.
    """

    def __init__(
        self,
        root_or_meta: DatasetMeta | Path | str,
        chunk_size: int,
        with_task: bool = False,
        tolerance_s: float = TOLERANCE_S,
        video_backend: str = "pyav",
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if isinstance(root_or_meta, DatasetMeta):
            self.meta = root_or_meta
        else:
            self.meta = load_meta(resolve_dataset_root(str(root_or_meta)))
        self.chunk_size = chunk_size
        self.with_task = with_task
        self.tolerance_s = tolerance_s
        self.video_backend = video_backend
        self._starts = [ep.dataset_from_index for ep in self.meta.episodes]
        self._deltas = np.arange(chunk_size, dtype=np.int64)
        self._stats: dict[str, FeatureStats] | None = None
        self._files: dict[Path, _DataFile] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # reloaded lazily in each process
        return state

    def __len__(self) -> int:
        return self.meta.total_frames

    @property
    def stats(self) -> dict[str, FeatureStats]:
        """Normalisation statistics of ``observation.state`` and ``action``."""
        if self._stats is None:
            self._stats = load_stats(self.meta)
        return self._stats

    def _data_file(self, path: Path) -> _DataFile:
        if self._pid != os.getpid():  # forked: open files afresh in this process
            self._files, self._pid = {}, os.getpid()
        data = self._files.get(path)
        if data is None:
            data = _load_data_file(path, self.meta)
            self._files[path] = data
        return data

    def episode_of(self, index: int) -> EpisodeRecord:
        return self.meta.episodes[bisect.bisect_right(self._starts, index) - 1]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = int(idx)
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} frames")
        ep = self.episode_of(idx)
        data = self._data_file(ep.data_file)
        row = int(data.rows(np.array([idx], dtype=np.int64))[0])
        frame_index = int(data.frame_index[row])

        wanted = idx + self._deltas
        pad = (wanted < ep.dataset_from_index) | (wanted >= ep.dataset_to_index)
        rows = data.rows(np.clip(wanted, ep.dataset_from_index, ep.dataset_to_index - 1))

        item: dict[str, Any] = {
            STATE: torch.from_numpy(data.state[row].copy()),
            ACTION: torch.from_numpy(data.action[rows]),
            ACTION_IS_PAD: torch.from_numpy(pad),
            "timestamp": torch.tensor(data.timestamp[row], dtype=torch.float32),
            "frame_index": torch.tensor(frame_index, dtype=torch.int64),
            "episode_index": torch.tensor(int(data.episode_index[row]), dtype=torch.int64),
            "index": torch.tensor(idx, dtype=torch.int64),
            "task_index": torch.tensor(int(data.task_index[row]), dtype=torch.int64),
        }
        for key in self.meta.image_keys:
            item[key] = data.image(row, key, self.meta.root)
        item.update(self._decode_videos(ep, frame_index))
        if self.with_task:
            task_index = int(data.task_index[row])
            if task_index not in self.meta.tasks:
                raise dataset_error(
                    ep.data_file, f"task_index {task_index} is not in the task list", REFETCH_HINT
                )
            item[TASK] = self.meta.tasks[task_index]
        return item

    def _decode_videos(self, ep: EpisodeRecord, frame_index: int) -> dict[str, torch.Tensor]:
        # LeRobot queries the frame grid (frame_index / fps), shifted to where the episode starts.
        query_s = frame_index / self.meta.fps
        keys = self.meta.video_keys

        def decode(key: str) -> torch.Tensor:
            video = ep.videos[key]
            return decode_video_frame(
                video.path, video.from_timestamp + query_s, self.tolerance_s, self.video_backend
            )

        if len(keys) <= 1:
            return {key: decode(key) for key in keys}
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            futures = {key: pool.submit(decode, key) for key in keys}
            return {key: future.result() for key, future in futures.items()}
