"""Probes that measure nothing: read a dataset's metadata (writing a synthetic one first), report
torch and its devices, describe a model. They run in a child so that the tuner never imports torch."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from probes.protocol import DatasetInfo, Environment, GpuFacts, ProbeRequest


def run_dataset_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Write ``request.synthetic`` if asked (once), then read the dataset's metadata."""
    from probes.dataset import DatasetError, load_meta, resolve_dataset_root
    from probes.synthetic import write_synthetic_dataset

    try:
        if request.synthetic is not None:
            s = request.synthetic
            root = write_synthetic_dataset(
                Path(s.root),
                cameras=s.cameras,
                image_size=tuple(s.image_size),
                fps=s.fps,
                episodes=s.episodes,
                episode_length=s.episode_length,
                state_dim=s.state_dim,
                action_dim=s.action_dim,
                codec=s.codec,
                gop=s.gop,
                seed=s.seed,
            )
        else:
            if request.dataset_root is None:
                raise DatasetError("no dataset given")
            root = resolve_dataset_root(request.dataset_root)
        meta = load_meta(root)
    except (DatasetError, FileExistsError, ValueError) as exc:
        # The dataset (or the settings asked of it) is at fault: the tuner says so in one line.
        return {"status": "error", "message": str(exc), "invalid_input": True}
    codec = next((meta.camera_codecs.get(k) for k in meta.camera_keys if meta.camera_codecs.get(k)), None)
    info = DatasetInfo(
        root=str(root),
        cameras=len(meta.camera_keys),
        camera_shapes={k: [int(v) for v in meta.camera_shapes[k]] for k in meta.camera_keys},
        state_dim=int(meta.state_dim),
        action_dim=int(meta.action_dim),
        fps=int(meta.fps),
        codec=codec,
        version=meta.version,
        # autotune's own synthetic datasets (AV1 written here) decode with both; a user's is checked.
        undecodable=undecodable(meta) if request.synthetic is None else {},
    )
    return {"status": "ok", "dataset": info}


CHECKED_EPISODES = 8  # spread over the dataset; each read at its first, middle and last frame


def undecodable(meta: Any) -> dict[str, str]:
    """The first sample torchcodec (where it loads here) cannot decode as LeRobot asks for it, keyed
    by "torchcodec": its approximate seek can land a frame off on some files, where PyAV's exact
    decode does not. Empty where the dataset has no videos, or every sample read decodes."""
    from probes.dataset import DatasetError, FrameDataset
    from probes.dataset.decode import backend_error

    if not meta.video_keys:
        return {}
    episodes = meta.episodes
    step = max(1, len(episodes) // CHECKED_EPISODES)
    indices = []
    for ep in episodes[::step][:CHECKED_EPISODES]:
        last = ep.dataset_to_index - 1
        indices += sorted({ep.dataset_from_index, (ep.dataset_from_index + last) // 2, last})
    failed: dict[str, str] = {}
    # torchcodec only: its approximate seek is what can miss where PyAV's exact decode does not
    # (a file PyAV cannot decode either fails the run later, naming it).
    for backend in ("torchcodec",):
        if backend_error(backend) is not None:
            continue
        dataset = FrameDataset(meta, chunk_size=1, video_backend=backend)
        for index in indices:
            try:
                dataset[index]
            except DatasetError as exc:
                failed[backend] = str(exc)
                break
    return failed


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _torchcodec_loads() -> dict[str, str]:
    """Whether torchcodec loads here, as LeRobot decides its default video backend."""
    if not _version("torchcodec"):
        return {"torchcodec_state": "missing"}
    from probes.dataset.decode import backend_error

    error = backend_error("torchcodec")
    return (
        {"torchcodec_state": "ok"}
        if error is None
        else {"torchcodec_state": "error", "torchcodec_error": error}
    )


def run_environment_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """torch, its CUDA build, and the CUDA devices it sees (none on a CPU-only machine)."""
    import torch

    available = torch.cuda.is_available()
    devices = []
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(GpuFacts(index, props.name, (props.major, props.minor), int(props.total_memory)))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    environment = Environment(
        torch_version=_version("torch") or torch.__version__,
        torch_cuda_version=torch.version.cuda or "",
        cudnn_version=str(cudnn or ""),
        torchvision_version=_version("torchvision"),
        torchcodec_version=_version("torchcodec"),
        **_torchcodec_loads(),
        cuda_available=available,
        arch_list=list(torch.cuda.get_arch_list()) if torch.version.cuda else [],
        devices=devices,
    )
    return {"status": "ok", "environment": environment}


def run_describe_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """The model's configuration, sequence lengths and parameter counts, on the meta device."""
    from probes import catalogue

    assert request.model is not None
    cfg = catalogue.build_config(request.model)
    return {"status": "ok", "description": catalogue.model_module(request.model.policy).describe(cfg)}
