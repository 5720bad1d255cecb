"""Read a local LeRobot dataset (v3.0 or v2.1) and yield samples exactly as LeRobot's loader does.

- :mod:`.locate`: where the dataset is (a folder, or a repo id in LeRobot's local cache).
- :mod:`.meta`: its metadata, validated (:mod:`.v30` and :mod:`.v21` read the episode tables).
- :mod:`.stats`: the normalisation statistics of state and action.
- :mod:`.decode`: camera frames from videos or stored images.
- :mod:`.frames`: :class:`FrameDataset`, the torch ``Dataset`` the probes read.
"""

from probes.dataset.decode import decode_video_frame
from probes.dataset.errors import DatasetError
from probes.dataset.frames import FrameDataset
from probes.dataset.locate import lerobot_home, resolve_dataset_root
from probes.dataset.meta import load_meta
from probes.dataset.records import DatasetMeta, EpisodeRecord, EpisodeVideo
from probes.dataset.stats import load_stats

__all__ = [
    "DatasetError",
    "DatasetMeta",
    "EpisodeRecord",
    "EpisodeVideo",
    "FrameDataset",
    "decode_video_frame",
    "load_meta",
    "lerobot_home",
    "load_stats",
    "resolve_dataset_root",
]
