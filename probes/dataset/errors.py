"""How a broken dataset is reported: :class:`DatasetError`, one line naming the file and what to do."""

from __future__ import annotations

import re
from pathlib import Path

ROOT_HINT = "point --dataset at a LeRobot dataset root (the folder holding meta/info.json)"
REFETCH_HINT = "download the dataset again or regenerate it"


class DatasetError(Exception):
    """A problem with the dataset on disk; the message is one line: file, problem, what to do."""


def dataset_error(path: Path | str, problem: str, hint: str) -> DatasetError:
    text = f"dataset {path}: {problem}; {hint}"
    return DatasetError(re.sub(r"\s*\n\s*", " ", text).strip())


def reason(exc: BaseException) -> str:
    """An exception as a short, single-line reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
