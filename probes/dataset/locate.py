"""Where a dataset lives: a folder, or a ``user/name`` repo id in LeRobot's local cache."""

from __future__ import annotations

import os
import re
from pathlib import Path

from probes.dataset.errors import ROOT_HINT, dataset_error


def lerobot_home() -> Path:
    """LeRobot's local dataset cache: ``$HF_LEROBOT_HOME``, else ``$HF_HOME/lerobot``."""
    if "HF_LEROBOT_HOME" in os.environ:
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return hf_home / "lerobot"


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_dataset_root(spec: str) -> Path:
    """The dataset root for ``spec``: an existing directory, or a ``user/name`` repo id found in
    LeRobot's local cache (``$HF_LEROBOT_HOME/<repo_id>``). Never touches the network."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if _REPO_ID.match(spec) and not spec.startswith((".", "/")):
        home = lerobot_home()
        candidate = home / spec
        if candidate.is_dir():
            return candidate
        # Newer LeRobot downloads into a revision-safe hub cache under $HF_LEROBOT_HOME/hub.
        user, name = spec.split("/")
        snapshots = home / "hub" / f"datasets--{user}--{name}" / "snapshots"
        if snapshots.is_dir():
            found = [p for p in snapshots.iterdir() if (p / "meta" / "info.json").is_file()]
            if found:
                return max(found, key=lambda p: (p / "meta" / "info.json").stat().st_mtime)
        raise dataset_error(
            spec,
            f"not a directory, and no local copy at {candidate}",
            "pass the dataset folder, or download it first "
            f"(huggingface-cli download --repo-type dataset {spec} --local-dir {candidate})",
        )
    raise dataset_error(spec, "no such directory", ROOT_HINT)
