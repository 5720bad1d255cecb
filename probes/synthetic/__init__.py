"""Write a synthetic LeRobot dataset (v3.0 or v2.1) in exactly the on-disk format LeRobot writes.

Frames are deterministic functions of ``(seed, camera, episode, frame_index)`` (see
:func:`synthetic_frame`), so a reader can be checked against what was encoded. Videos are encoded
with PyAV as LeRobot encodes them (AV1 through libsvtav1, yuv420p, a keyframe every ``gop`` frames,
crf 30; or H.264 / HEVC). A v3.0 dataset packs many episodes into each data and video file, each
episode's video starting with a keyframe and located by its ``from_timestamp``, exactly as
LeRobot's concatenation leaves it.

- :mod:`.writer`: :func:`write_synthetic_dataset`, settings checked by :class:`.spec.SyntheticSpec`;
  :mod:`.episodes`: the episodes that share one file, written.
- :mod:`.content`: the frames and joint trajectories; :mod:`.video`: encoding and concatenation.
- :mod:`.stats`: LeRobot's feature statistics; :mod:`.meta` and :mod:`.files`: the files written.
"""

from probes.synthetic.content import synthetic_frame
from probes.synthetic.meta import camera_keys, joint_names
from probes.synthetic.spec import IMAGE_STORAGES, VERSIONS, SyntheticSpec
from probes.synthetic.video import CODECS
from probes.synthetic.writer import write_synthetic_dataset

__all__ = [
    "CODECS",
    "IMAGE_STORAGES",
    "VERSIONS",
    "SyntheticSpec",
    "camera_keys",
    "joint_names",
    "synthetic_frame",
    "write_synthetic_dataset",
]
