"""``autotune run``: the batch search, the worker study, the profile and the CSVs, end to end."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autotune import fingerprint as fp
from autotune.config import DEFAULT_CAMERAS, DEFAULT_IMAGE_SIZE, RunConfig
from autotune.errors import ProbeError, UserError
from autotune.probe_client import run_probe
from autotune.profile import (
    Conditions,
    Profile,
    WorkerSetting,
    command_line,
    lerobot_train_args,
    read_profile,
    write_profile,
)
from autotune.results import ResultsWriter
from autotune.search import SearchOutcome, find_max_batch, recommend_batch
from autotune.study import StudyOutcome, TrialRecord, run_study
from autotune.units import format_bytes
from probes.policy import policy_module
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

# The synthetic dataset: an SO-101-like recording, 30 fps, long enough that decoding is real
# work and random access rarely hits the same frames twice.
SYNTHETIC_FPS = 30
SYNTHETIC_EPISODES = 12
SYNTHETIC_EPISODE_LENGTH = 150
SYNTHETIC_REPO_ID = "local/autotune-synthetic"

BATCH_WARMUP_STEPS = 1
BATCH_MEASURE_STEPS = 3
WORKER_WARMUP_STEPS = 2
WORKER_MEASURE_STEPS = 6


@dataclass
class DatasetShape:
    """What the data fixes about the model: camera count and size, state and action sizes."""

    root: Path
    repo_id: str
    kind: str  # "synthetic" or "user"
    cameras: int
    image_size: tuple[int, int]
    state_dim: int
    action_dim: int


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def ensure_writable(results: Path) -> None:
    """Fail early, with one line, if the results folder cannot be written."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"results folder {results} cannot be written ({reason}); pass --results DIR") from exc


def prepare_dataset(cfg: RunConfig) -> DatasetShape:
    """Open the user's dataset, or write (once) and open the synthetic one."""
    from probes.dataset import DatasetError, load_meta, resolve_dataset_root

    try:
        if cfg.dataset is not None:
            root = resolve_dataset_root(cfg.dataset)
            kind = "user"
            repo_id = cfg.dataset if not Path(cfg.dataset).exists() else root.name
        else:
            from probes.synthetic import write_synthetic_dataset

            h, w = cfg.image_size or DEFAULT_IMAGE_SIZE
            cameras = cfg.cameras or DEFAULT_CAMERAS
            name = (
                f"synthetic-v3.0-{cameras}cam-{h}x{w}-{SYNTHETIC_FPS}fps-"
                f"{SYNTHETIC_EPISODES}x{SYNTHETIC_EPISODE_LENGTH}-s{cfg.state_dim}a{cfg.action_dim}"
            )
            root = cfg.results / "datasets" / name
            if not (root / "meta" / "info.json").exists():
                log.info("writing the synthetic dataset %s (once; later runs reuse it)", root)
            started = time.perf_counter()
            write_synthetic_dataset(
                root,
                cameras=cameras,
                image_size=(h, w),
                fps=SYNTHETIC_FPS,
                episodes=SYNTHETIC_EPISODES,
                episode_length=SYNTHETIC_EPISODE_LENGTH,
                state_dim=cfg.state_dim,
                action_dim=cfg.action_dim,
                seed=cfg.seed,
            )
            log.debug("synthetic dataset ready in %.1f s", time.perf_counter() - started)
            kind = "synthetic"
            repo_id = SYNTHETIC_REPO_ID
        meta = load_meta(root)
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    shapes = {tuple(meta.camera_shapes[key][:2]) for key in meta.camera_keys}
    if not meta.camera_keys:
        raise UserError(f"dataset {root}: has no camera features (observation.images.*)")
    if len(shapes) > 1:
        listing = ", ".join(
            f"{k} {meta.camera_shapes[k][0]}x{meta.camera_shapes[k][1]}" for k in meta.camera_keys
        )
        raise UserError(
            f"dataset {root}: cameras differ in shape ({listing}); {cfg.policy} needs every camera "
            "at one size"
        )
    (image_size,) = shapes
    return DatasetShape(
        root=root,
        repo_id=repo_id,
        kind=kind,
        cameras=len(meta.camera_keys),
        image_size=(int(image_size[0]), int(image_size[1])),
        state_dim=int(meta.state_dim),
        action_dim=int(meta.action_dim),
    )


def default_memory_limit(cfg: RunConfig) -> int:
    """The card's free memory on CUDA; half the host's available memory on CPU."""
    if cfg.device.startswith("cuda"):
        gpu = fp.gpu_info(int(cfg.device.split(":")[1]))
        if gpu is None:
            raise UserError(f"device {cfg.device}: no NVIDIA GPU found; use --device cpu")
        return gpu.memory_free_bytes
    from probes.memory import host_available_bytes

    return host_available_bytes() // 2


def _conditions_key(conditions: Conditions, fingerprint: fp.Fingerprint, extra: dict) -> str:
    blob = json.dumps(
        {"conditions": _comparable(conditions), "fingerprint": fingerprint.to_dict(), **extra},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def stale_reasons(existing: dict[str, Any], fingerprint: fp.Fingerprint, conditions: Conditions) -> list[str]:
    """Why an existing profile does not apply now (empty: it is up to date)."""
    reasons = [f"{k} changed" for k in fingerprint.changes_from(existing.get("fingerprint", {}))]
    old = existing.get("conditions", {})
    for key, value in _comparable(conditions).items():
        if key not in old or _comparable_dict(old).get(key) != value:
            reasons.append(f"{key} changed")
    return reasons


def _comparable(conditions: Conditions) -> dict[str, Any]:
    return _comparable_dict(asdict(conditions))


def _comparable_dict(conditions: dict[str, Any]) -> dict[str, Any]:
    """Conditions as compared between runs: a default budget (the card's free memory) varies a
    little from run to run, so only an explicit --memory-limit is compared."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in conditions.items()}
    if out.get("memory_limit_is_default"):
        out.pop("memory_limit_bytes", None)
    return out


class Run:
    """One ``autotune run``: owns the run id, the CSV writer and the probe requests."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_id = new_run_id()
        self.started = time.perf_counter()

    def model_spec(self, data: DatasetShape) -> ModelSpec:
        return ModelSpec(
            policy=self.cfg.policy,
            cameras=data.cameras,
            image_size=data.image_size,
            state_dim=data.state_dim,
            action_dim=data.action_dim,
            gradient_checkpointing=self.cfg.grad_checkpointing,
            overrides=dict(self.cfg.policy_overrides),
        )

    def execute(self) -> tuple[Profile | None, list[str]]:
        """Tune; return the new profile (None when the existing one is up to date) and notes."""
        cfg = self.cfg
        module = policy_module(cfg.policy)
        # A user's dataset is checked before anything is created; the synthetic one is written
        # into the results folder, which must be writable first.
        if cfg.dataset is not None:
            data = prepare_dataset(cfg)
            ensure_writable(cfg.results)
        else:
            ensure_writable(cfg.results)
            data = prepare_dataset(cfg)
        spec = self.model_spec(data)
        policy_cfg = _policy_config(module, spec)
        memory_limit = cfg.memory_limit_bytes or default_memory_limit(cfg)
        fingerprint = fp.take(cfg.device)
        conditions = Conditions(
            device=cfg.device,
            precision=cfg.precision,
            grad_checkpointing=cfg.grad_checkpointing,
            cameras=data.cameras,
            image_size=list(data.image_size),
            state_dim=data.state_dim,
            action_dim=data.action_dim,
            memory_limit_bytes=memory_limit,
            memory_limit_is_default=cfg.memory_limit_bytes is None,
            headroom=cfg.headroom,
            dataset=str(data.root),
            dataset_kind=data.kind,
            policy_overrides=dict(cfg.policy_overrides),
        )
        existing = read_profile(cfg.results, cfg.policy)
        if existing is not None and not cfg.force:
            reasons = stale_reasons(existing, fingerprint, conditions)
            if not reasons:
                log.info("profile %s is up to date for this machine; --force re-tunes", cfg.policy)
                return None, ["up to date: nothing changed since the last tune"]
            log.info("re-tuning: %s", ", ".join(reasons))

        key = {
            "timestamp": "",
            "policy": cfg.policy,
            "device": cfg.device,
            "gpu_name": fingerprint.gpu_name,
            "precision": cfg.precision,
            "grad_checkpointing": cfg.grad_checkpointing,
            "cameras": data.cameras,
            "image_h": data.image_size[0],
            "image_w": data.image_size[1],
            "memory_limit_bytes": memory_limit,
            "run_id": self.run_id,
        }
        writer = ResultsWriter(cfg.results, key)
        run_row: dict[str, Any] = {
            "dataset": str(data.root),
            "gpu_uuid": fingerprint.gpu_uuid,
            "driver_version": fingerprint.driver_version,
            "cuda_driver_version": fingerprint.cuda_driver_version,
            "torch_version": fingerprint.torch_version,
            "cpu_model": fingerprint.cpu_model,
            "cpu_cores": fingerprint.cpu_cores,
        }
        log.info(
            "run %s: %s on %s, %s, gradient checkpointing %s, budget %s, %d camera(s) %dx%d",
            self.run_id,
            cfg.policy,
            fingerprint.gpu_name or cfg.device,
            cfg.precision,
            "on" if cfg.grad_checkpointing else "off",
            format_bytes(memory_limit),
            data.cameras,
            *data.image_size,
        )
        try:
            search = self.search(spec, memory_limit, writer)
            run_row.update(
                max_batch_size=search.max_batch, certified=search.certified, probes=len(search.probes)
            )
            if search.max_batch == 0:
                first = search.probes[0]
                raise UserError(
                    f"even batch 1 does not fit in {format_bytes(memory_limit)} "
                    f"({first.message or 'out of memory'}); raise --memory-limit, lower the image "
                    "size or turn on --grad-checkpointing"
                )
            batch = recommend_batch(search, cfg.headroom)
            log.info(
                "max batch %d (%s); recommended batch %d keeps %.0f%% headroom",
                search.max_batch,
                "certified" if search.certified else "capped at --max-batch",
                batch,
                cfg.headroom * 100,
            )
            study = self.study(spec, data, batch, memory_limit, conditions, fingerprint, writer)
        except (UserError, ProbeError, KeyboardInterrupt) as exc:
            run_row.update(status="failed", message=str(exc) or type(exc).__name__)
            run_row["wall_s"] = round(time.perf_counter() - self.started, 3)
            writer.add("runs.csv", _stamped(run_row))
            raise
        profile = self.build_profile(
            module, policy_cfg, data, conditions, fingerprint, search, batch, study, memory_limit
        )
        path = write_profile(cfg.results, profile)
        best = study.best.result
        run_row.update(
            status="ok",
            batch_size=batch,
            num_workers=profile.num_workers,
            prefetch_factor=profile.prefetch_factor,
            data_s=best.data_s,
            updt_s=best.updt_s,
            samples_per_s=best.samples_per_s,
            peak_reserved_bytes=profile.peak_reserved_bytes,
            default_samples_per_s=profile.lerobot_default.samples_per_s if profile.lerobot_default else None,
            speedup_vs_default=profile.speedup_vs_default,
            trials=len(study.trials),
            profile=str(path),
            wall_s=round(time.perf_counter() - self.started, 3),
        )
        writer.add("runs.csv", _stamped(run_row))
        return profile, profile.notes

    def search(self, spec: ModelSpec, memory_limit: int, writer: ResultsWriter) -> SearchOutcome:
        cfg = self.cfg
        count = 0

        def probe(batch_size: int) -> ProbeResult:
            nonlocal count
            count += 1
            log.info("probe %d: batch %d ...", count, batch_size)
            request = ProbeRequest(
                kind="batch",
                model=spec,
                device=cfg.device,
                precision=cfg.precision,
                batch_size=batch_size,
                memory_limit_bytes=memory_limit,
                warmup_steps=BATCH_WARMUP_STEPS,
                measure_steps=BATCH_MEASURE_STEPS,
                seed=cfg.seed,
            )
            return run_probe(request, cfg.probe_timeout_s)

        def record(result: ProbeResult) -> None:
            log.info("probe %d: batch %d %s", count, result.batch_size, _describe_probe(result))
            writer.add("batch_probes.csv", _stamped(_probe_row(result, "search")))

        return find_max_batch(probe, memory_limit, max_batch=cfg.max_batch, on_probe=record)

    def study(
        self,
        spec: ModelSpec,
        data: DatasetShape,
        batch: int,
        memory_limit: int,
        conditions: Conditions,
        fingerprint: fp.Fingerprint,
        writer: ResultsWriter,
    ) -> StudyOutcome:
        cfg = self.cfg
        study_key = _conditions_key(conditions, fingerprint, {"batch_size": batch, "policy": cfg.policy})
        study_name = f"{cfg.policy}-{study_key}"
        cores = fingerprint.cpu_cores

        def trial(workers: int, prefetch: int | None) -> ProbeResult:
            request = ProbeRequest(
                kind="workers",
                model=spec,
                device=cfg.device,
                precision=cfg.precision,
                batch_size=batch,
                memory_limit_bytes=memory_limit,
                warmup_steps=WORKER_WARMUP_STEPS,
                measure_steps=WORKER_MEASURE_STEPS,
                dataset_root=str(data.root),
                num_workers=workers,
                prefetch_factor=prefetch,
                seed=cfg.seed,
            )
            return run_probe(request, cfg.probe_timeout_s)

        def record(t: TrialRecord) -> None:
            r = t.result
            log.info(
                "trial %d: num_workers=%d prefetch=%s -> %s",
                t.number,
                t.num_workers,
                t.prefetch_factor,
                f"{r.samples_per_s:.2f} samples/s (data_s {r.data_s:.3f}, updt_s {r.updt_s:.3f})"
                if r.fits
                else f"{r.status}: {r.message}",
            )
            writer.add("worker_trials.csv", _stamped(_trial_row(t)))

        log.info("worker study at batch %d: %d trial(s), num_workers 0..%d", batch, cfg.trials, max(cores, 4))
        return run_study(
            trial,
            storage_path=cfg.results / "studies" / f"{cfg.policy}.db",
            study_name=study_name,
            n_trials=cfg.trials,
            max_workers=cores,
            seed=cfg.seed,
            first_guesses=[(min(cores, 8), 2)],
            on_trial=record,
        )

    def build_profile(
        self,
        module: Any,
        policy_cfg: Any,
        data: DatasetShape,
        conditions: Conditions,
        fingerprint: fp.Fingerprint,
        search: SearchOutcome,
        batch: int,
        study: StudyOutcome,
        memory_limit: int,
    ) -> Profile:
        cfg = self.cfg
        best = study.best
        default = study.lerobot_default
        at_batch = search.result_at(batch)
        if at_batch is not None and at_batch.fits:
            peak_alloc, peak_reserved = at_batch.peak_allocated_bytes, at_batch.peak_reserved_bytes
        elif search.fit is not None:
            peak_alloc = peak_reserved = int(search.fit.predict(batch))
        else:
            peak_alloc, peak_reserved = best.result.peak_allocated_bytes, best.result.peak_reserved_bytes
        at_max = search.result_at(search.max_batch)
        args = lerobot_train_args(
            policy_args=module.lerobot_args(policy_cfg),
            dataset_repo_id=data.repo_id,
            dataset_root=str(data.root.resolve()),
            device=cfg.device,
            precision=cfg.precision,
            batch_size=batch,
            num_workers=best.num_workers,
            prefetch_factor=best.prefetch_factor,
        )
        notes = []
        if data.kind == "synthetic":
            notes.append(
                "tuned on autotune's synthetic dataset: point --dataset.repo_id/--dataset.root at "
                "your own data (or tune with --dataset) before training"
            )
        if cfg.grad_checkpointing:
            notes.append(
                "the batch assumes gradient checkpointing, which released lerobot-train does not "
                "have for ACT or SmolVLA; without it use a profile tuned with --no-grad-checkpointing"
            )
        if search.capped:
            notes.append(f"the search stopped at --max-batch {cfg.max_batch} without running out of memory")
        speedup = None
        if default is not None and default.result.samples_per_s > 0:
            speedup = best.result.samples_per_s / default.result.samples_per_s
        return Profile(
            policy=cfg.policy,
            run_id=self.run_id,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            fingerprint=fingerprint.to_dict(),
            conditions=conditions,
            max_batch_size=search.max_batch,
            certified=search.certified,
            batch_size=batch,
            num_workers=best.num_workers,
            prefetch_factor=best.prefetch_factor,
            data_s=best.result.data_s,
            updt_s=best.result.updt_s,
            samples_per_s=best.result.samples_per_s,
            peak_allocated_bytes=int(peak_alloc),
            peak_reserved_bytes=int(peak_reserved),
            max_batch_peak_reserved_bytes=at_max.peak_reserved_bytes if at_max else 0,
            memory_model=(
                {
                    "fixed_bytes": search.fit.fixed_bytes,
                    "per_sample_bytes": search.fit.per_sample_bytes,
                    "points": search.fit.points,
                    "max_rel_error": search.fit.max_rel_error,
                }
                if search.fit
                else None
            ),
            lerobot_default=(
                WorkerSetting(
                    num_workers=default.num_workers,
                    prefetch_factor=default.prefetch_factor,
                    data_s=default.result.data_s,
                    updt_s=default.result.updt_s,
                    samples_per_s=default.result.samples_per_s,
                )
                if default
                else None
            ),
            speedup_vs_default=speedup,
            search={
                "probes": len(search.probes),
                "probed_batch_sizes": [p.batch_size for p in search.probes],
                "wall_s": round(sum(p.wall_s for p in search.probes), 3),
            },
            study={
                "trials": len(study.trials),
                "storage": study.storage,
                "study_name": study.study_name,
                "wall_s": round(sum(t.result.wall_s for t in study.trials if not t.resumed), 3),
            },
            lerobot_train_args=args,
            lerobot_train_command=command_line(args),
            notes=notes,
        )


def _policy_config(module: Any, spec: ModelSpec) -> Any:
    try:
        return module.Config(
            cameras=spec.cameras,
            image_size=tuple(spec.image_size),
            state_dim=spec.state_dim,
            action_dim=spec.action_dim,
            gradient_checkpointing=spec.gradient_checkpointing,
            **spec.overrides,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{spec.policy} configuration: {exc}") from exc


def _stamped(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _describe_probe(r: ProbeResult) -> str:
    if r.status == "ok":
        return (
            f"fits: peak {format_bytes(r.peak_reserved_bytes)} reserved, "
            f"{r.step_time_s:.3f} s/step, {r.samples_per_s:.1f} samples/s ({r.wall_s:.0f} s)"
        )
    return f"{r.status}: {r.message} ({r.wall_s:.0f} s)"


def _probe_row(r: ProbeResult, phase: str) -> dict[str, Any]:
    return {
        "phase": phase,
        "batch_size": r.batch_size,
        "status": r.status,
        "peak_allocated_bytes": r.peak_allocated_bytes,
        "peak_reserved_bytes": r.peak_reserved_bytes,
        "alloc_retries": r.alloc_retries,
        "step_time_s": round(r.step_time_s, 6),
        "samples_per_s": round(r.samples_per_s, 4),
        "steps": r.steps,
        "wall_s": round(r.wall_s, 3),
        "message": r.message,
    }


def _trial_row(t: TrialRecord) -> dict[str, Any]:
    r = t.result
    total = r.data_s + r.updt_s
    return {
        "trial": t.number,
        "batch_size": r.batch_size,
        "num_workers": t.num_workers,
        "prefetch_factor": t.prefetch_factor,
        "is_lerobot_default": t.is_lerobot_default,
        "status": r.status,
        "data_s": round(r.data_s, 6),
        "updt_s": round(r.updt_s, 6),
        "samples_per_s": round(r.samples_per_s, 4),
        "data_fraction": round(r.data_s / total, 4) if total > 0 else None,
        "loader_rss_bytes": r.loader_rss_bytes,
        "steps": r.steps,
        "wall_s": round(r.wall_s, 3),
        "message": r.message,
    }
