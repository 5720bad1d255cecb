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
from autotune.batch import BatchDecision, decide_batch
from autotune.config import DEFAULT_CAMERAS, DEFAULT_IMAGE_SIZE, RunConfig
from autotune.errors import ProbeError, UserError
from autotune.loader import INPUT_BOUND_FRACTION, InputBound, LoaderModel, Remedy, diagnose
from autotune.memory_model import MemoryModel, fit_model
from autotune.plots import plot_batch, plot_workers
from autotune.probe_client import run_probe
from autotune.profile import (
    Comparison,
    Conditions,
    Profile,
    WorkerSetting,
    command_line,
    lerobot_train_args,
    read_profile,
    write_profile,
)
from autotune.results import ResultsWriter
from autotune.search import SearchOutcome, find_max_batch
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
# The soak: a longer run of the recommended batch (steps after warm-up) and how many sizes below
# it to time, per device type; a CPU step is slow, so it gets fewer.
SOAK_STEPS = {"cuda": 20, "cpu": 5}
THROUGHPUT_POINTS = {"cuda": 3, "cpu": 2}
# Worker trials: one warm-up step (it pays for starting the workers), then steps until the
# prefetched batches are used up, then the measured steps. A GPU step is short, so it affords more
# measured steps and a longer drain than a CPU step does.
WORKER_WARMUP_STEPS = 1
WORKER_MEASURE_STEPS = {"cuda": 8, "cpu": 3}
WORKER_DRAIN_BUDGET_S = {"cuda": 120.0, "cpu": 30.0}


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
    fps: int = SYNTHETIC_FPS
    codec: str | None = "av1"  # of the first video camera; None when cameras are images


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
        fps=int(meta.fps),
        codec=next((meta.camera_codecs.get(k) for k in meta.camera_keys if meta.camera_codecs.get(k)), None),
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


@dataclass
class Variant:
    """One way to train: the precision and whether gradient checkpointing is on."""

    precision: str
    grad_checkpointing: bool

    @property
    def label(self) -> str:
        return f"{self.precision}, checkpointing {'on' if self.grad_checkpointing else 'off'}"


@dataclass
class VariantOutcome:
    variant: Variant
    search: SearchOutcome
    decision: BatchDecision | None = None
    model: MemoryModel | None = None

    @property
    def samples_per_s(self) -> float:
        if self.decision is None:
            return 0.0
        point = next((p for p in self.decision.curve if p.batch_size == self.decision.batch_size), None)
        return point.samples_per_s if point else 0.0


class Run:
    """One ``autotune run``: owns the run id, the CSV writer and the probe requests."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_id = new_run_id()
        self.started = time.perf_counter()
        self.device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
        self.probe_count = 0

    @property
    def soak_steps(self) -> int:
        """Steps of the soak: ``--soak-steps``, else the device type's default."""
        if self.cfg.soak_steps is not None:
            return self.cfg.soak_steps
        return SOAK_STEPS[self.device_type]

    def model_spec(self, data: DatasetShape, variant: Variant) -> ModelSpec:
        return ModelSpec(
            policy=self.cfg.policy,
            cameras=data.cameras,
            image_size=data.image_size,
            state_dim=data.state_dim,
            action_dim=data.action_dim,
            gradient_checkpointing=variant.grad_checkpointing,
            overrides=dict(self.cfg.policy_overrides),
        )

    def variants(self) -> list[Variant]:
        cfg = self.cfg
        if not cfg.compare:
            return [Variant(cfg.precision, cfg.grad_checkpointing)]
        precisions = cfg.compare_precisions or [cfg.precision]
        return [Variant(p, gc) for p in precisions for gc in (True, False)]

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
        requested = Variant(cfg.precision, cfg.grad_checkpointing)
        policy_cfg = _policy_config(module, self.model_spec(data, requested))
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
            compare=cfg.compare,
            compare_precisions=list(cfg.compare_precisions or []),
            target_batch=cfg.target_batch,
        )
        existing = read_profile(cfg.results, cfg.policy)
        if existing is not None and not cfg.force:
            reasons = stale_reasons(existing, fingerprint, conditions)
            if not reasons:
                log.info("profile %s is up to date for this machine; --force re-tunes", cfg.policy)
                return None, ["up to date: nothing changed since the last tune"]
            log.info("re-tuning: %s", ", ".join(reasons))

        key = {
            "run_id": self.run_id,
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
            "run %s: %s on %s, budget %s, %d camera(s) %dx%d",
            self.run_id,
            cfg.policy,
            fingerprint.gpu_name or cfg.device,
            format_bytes(memory_limit),
            data.cameras,
            *data.image_size,
        )
        try:
            outcomes = [self.tune_batch(v, data, memory_limit, writer) for v in self.variants()]
            fitting = [o for o in outcomes if o.decision is not None]
            run_row["probes"] = self.probe_count
            if not fitting:
                first = outcomes[0].search.probes[0]
                raise UserError(
                    f"even batch 1 does not fit in {format_bytes(memory_limit)} "
                    f"({first.message or 'out of memory'}); raise --memory-limit, lower the image "
                    "size or turn on --grad-checkpointing"
                )
            winner = max(fitting, key=lambda o: o.samples_per_s)
            if len(outcomes) > 1:
                log.info("fastest that fits: %s", winner.variant.label)
            decision = winner.decision
            assert decision is not None
            run_row.update(
                precision=winner.variant.precision,
                grad_checkpointing=winner.variant.grad_checkpointing,
                max_batch_size=winner.search.max_batch,
                certified=winner.search.certified,
            )
            spec = self.model_spec(data, winner.variant)
            loader = self.loader_model(spec, winner, data, fingerprint.cpu_cores)
            study = self.study(
                spec,
                winner.variant,
                data,
                decision.batch_size,
                memory_limit,
                conditions,
                fingerprint,
                writer,
                first_guess=loader.first_guess(fingerprint.cpu_cores) if loader else None,
            )
            input_bound = self.input_bound(spec, winner, data, memory_limit, study, loader)
        except (UserError, ProbeError, KeyboardInterrupt) as exc:
            run_row.update(status="failed", message=str(exc) or type(exc).__name__, probes=self.probe_count)
            run_row["wall_s"] = round(time.perf_counter() - self.started, 3)
            writer.add("runs.csv", _stamped(run_row))
            raise
        profile = self.build_profile(
            module, policy_cfg, data, conditions, fingerprint, winner, outcomes, study, memory_limit
        )
        profile.loader_model = asdict(loader) if loader else None
        profile.input_bound = input_bound.to_dict() if input_bound else None
        if input_bound:
            profile.notes.append(input_bound.summary())
        path = write_profile(cfg.results, profile)
        best = study.best.result
        run_row.update(
            status="ok",
            batch_size=profile.batch_size,
            grad_accum_steps=profile.grad_accum_steps,
            lowered_by_soak=decision.lowered_by_soak,
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

    def batch_request(
        self, spec: ModelSpec, variant: Variant, batch_size: int, memory_limit: int, phase: str
    ) -> ProbeRequest:
        cfg = self.cfg
        soak_steps = self.soak_steps
        return ProbeRequest(
            kind="batch",
            model=spec,
            device=cfg.device,
            precision=variant.precision,
            batch_size=batch_size,
            memory_limit_bytes=memory_limit,
            warmup_steps=BATCH_WARMUP_STEPS,
            measure_steps=soak_steps if phase == "soak" else BATCH_MEASURE_STEPS,
            seed=cfg.seed,
            vary_padding=phase == "soak",
        )

    def tune_batch(
        self, variant: Variant, data: DatasetShape, memory_limit: int, writer: ResultsWriter
    ) -> VariantOutcome:
        """The certified maximum, then throughput and soak, for one variant."""
        cfg = self.cfg
        spec = self.model_spec(data, variant)
        variant_columns = {"precision": variant.precision, "grad_checkpointing": variant.grad_checkpointing}

        def probe(batch_size: int, phase: str = "search") -> ProbeResult:
            self.probe_count += 1
            number = self.probe_count
            log.info("probe %d (%s, %s): batch %d ...", number, phase, variant.label, batch_size)
            result = run_probe(
                self.batch_request(spec, variant, batch_size, memory_limit, phase), cfg.probe_timeout_s
            )
            log.info("probe %d: batch %d %s", number, batch_size, _describe_probe(result))
            writer.add("batch_probes.csv", _stamped({**variant_columns, **_probe_row(result, phase)}))
            return result

        search = find_max_batch(probe, memory_limit, max_batch=cfg.max_batch)
        outcome = VariantOutcome(variant=variant, search=search)
        if search.max_batch == 0:
            log.warning("%s: even batch 1 does not fit", variant.label)
            return outcome
        log.info(
            "%s: max batch %d (%s, %d probes)",
            variant.label,
            search.max_batch,
            "certified" if search.certified else "capped at --max-batch",
            len(search.probes),
        )
        overhead = max((p.device_overhead_bytes for p in search.probes), default=0)
        outcome.model = fit_model(search, overhead)
        soak_steps = self.soak_steps
        points = cfg.throughput_points or THROUGHPUT_POINTS[self.device_type]
        outcome.decision = decide_batch(
            search,
            probe,
            headroom=cfg.headroom,
            throughput_points=points,
            soak=soak_steps > 0,
            target_batch=cfg.target_batch,
        )
        d = outcome.decision
        log.info(
            "%s: batch %d recommended (headroom allows %d%s), %.2f samples/s",
            variant.label,
            d.batch_size,
            d.headroom_batch,
            ", lowered by the soak" if d.lowered_by_soak else "",
            outcome.samples_per_s,
        )
        return outcome

    def study(
        self,
        spec: ModelSpec,
        variant: Variant,
        data: DatasetShape,
        batch: int,
        memory_limit: int,
        conditions: Conditions,
        fingerprint: fp.Fingerprint,
        writer: ResultsWriter,
        first_guess: int | None = None,
    ) -> StudyOutcome:
        cfg = self.cfg
        study_key = _conditions_key(
            conditions, fingerprint, {"batch_size": batch, "policy": cfg.policy, "variant": asdict(variant)}
        )
        study_name = f"{cfg.policy}-{study_key}"
        cores = fingerprint.cpu_cores
        device_type = self.device_type
        variant_columns = {"precision": variant.precision, "grad_checkpointing": variant.grad_checkpointing}

        def trial(workers: int, prefetch: int | None) -> ProbeResult:
            request = ProbeRequest(
                kind="workers",
                model=spec,
                device=cfg.device,
                precision=variant.precision,
                batch_size=batch,
                memory_limit_bytes=memory_limit,
                warmup_steps=WORKER_WARMUP_STEPS,
                measure_steps=WORKER_MEASURE_STEPS[device_type],
                drain_budget_s=WORKER_DRAIN_BUDGET_S[device_type],
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
            writer.add("worker_trials.csv", _stamped({**variant_columns, **_trial_row(t)}))

        log.info("worker study at batch %d: %d trial(s), num_workers 0..%d", batch, cfg.trials, max(cores, 4))
        return run_study(
            trial,
            storage_path=cfg.results / "studies" / f"{cfg.policy}.db",
            study_name=study_name,
            n_trials=cfg.trials,
            max_workers=cores,
            seed=cfg.seed,
            first_guesses=[(first_guess, 2)] if first_guess is not None else [(min(cores, 8), 2)],
            host_budget_bytes=self.host_budget(),
            on_trial=record,
        )

    def host_budget(self) -> int:
        if self.cfg.host_memory_limit_bytes is not None:
            return self.cfg.host_memory_limit_bytes
        from probes.memory import host_available_bytes

        return int(0.8 * host_available_bytes())

    def decode_s(self, spec: ModelSpec, root: Path) -> float:
        """One process's time to read one sample of the dataset at ``root`` (a decode probe)."""
        request = ProbeRequest(
            kind="decode",
            model=spec,
            device="cpu",
            precision="fp32",
            batch_size=1,
            memory_limit_bytes=1,
            measure_steps=8,
            dataset_root=str(root),
            seed=self.cfg.seed,
        )
        result = run_probe(request, self.cfg.probe_timeout_s)
        if result.status != "ok":
            raise ProbeError(f"reading samples from {root} failed: {result.message}")
        return result.decode_s_per_sample

    def loader_model(
        self, spec: ModelSpec, winner: VariantOutcome, data: DatasetShape, cores: int
    ) -> LoaderModel | None:
        """Measure one worker's rate and the step's; None if the step time is unknown."""
        decision = winner.decision
        assert decision is not None
        point = next((p for p in decision.curve if p.batch_size == decision.batch_size), None)
        if point is None or point.step_time_s <= 0:
            return None
        decode = self.decode_s(spec, data.root)
        model = LoaderModel(decision.batch_size, decode, point.step_time_s, cores)
        log.info(
            "one worker reads a sample in %.1f ms and the step takes %.3f s at batch %d: "
            "%d worker(s) should keep up (this machine has %d cores)",
            decode * 1000,
            point.step_time_s,
            decision.batch_size,
            model.workers_needed,
            cores,
        )
        return model

    def input_bound(
        self,
        spec: ModelSpec,
        winner: VariantOutcome,
        data: DatasetShape,
        memory_limit: int,
        study: StudyOutcome,
        loader: LoaderModel | None,
    ) -> InputBound | None:
        """If the best setting still waits on data over 10% of the time, measure what would help."""
        best = study.best.result
        total = best.data_s + best.updt_s
        decision = winner.decision
        assert decision is not None
        if loader is None or total <= 0 or best.data_s / total <= INPUT_BOUND_FRACTION:
            return None
        log.info("input-bound: measuring what would help")
        remedies: list[Remedy] = []
        codec = {"av1": "libsvtav1", "h264": "h264", "hevc": "hevc"}.get(data.codec or "")
        if codec is not None:
            remedies = self.measure_remedies(spec, winner, data, memory_limit, study, loader, codec)
        return diagnose(
            batch_size=decision.batch_size,
            data_s=best.data_s,
            updt_s=best.updt_s,
            model=loader,
            cameras=data.cameras,
            remedies=remedies,
        )

    def measure_remedies(
        self,
        spec: ModelSpec,
        winner: VariantOutcome,
        data: DatasetShape,
        memory_limit: int,
        study: StudyOutcome,
        loader: LoaderModel,
        codec: str,
    ) -> list[Remedy]:
        """Decode (and, for smaller images, train) small synthetic variants of the data, measured.

        Variants are written with the data's codec and shapes; their decode times are scaled by
        how the user's own data compares with our encoding at the same size.
        """
        from probes.synthetic import write_synthetic_dataset

        decision = winner.decision
        assert decision is not None
        best = study.best
        h, w = data.image_size
        half = (max(32, h // 4 * 2), max(32, w // 4 * 2))

        def variant(size: tuple[int, int], gop: int) -> Path:
            name = f"probe-{codec}-{data.cameras}cam-{size[0]}x{size[1]}-gop{gop}-s{data.state_dim}a{data.action_dim}"
            return write_synthetic_dataset(
                self.cfg.results / "datasets" / name,
                cameras=data.cameras,
                image_size=size,
                fps=data.fps,
                episodes=2,
                episode_length=90,
                state_dim=data.state_dim,
                action_dim=data.action_dim,
                codec=codec,
                gop=gop,
                seed=self.cfg.seed,
            )

        remedies: list[Remedy] = []
        reference = self.decode_s(spec, variant((h, w), 2))
        if reference <= 0:
            return remedies
        scale = loader.decode_s_per_sample / reference
        dense = self.decode_s(spec, variant((h, w), 1)) * scale
        dense_model = LoaderModel(decision.batch_size, dense, best.result.updt_s, loader.cores)
        remedies.append(
            Remedy(
                what="a keyframe every frame instead of every 2",
                measured=True,
                data_s=dense_model.predicted_data_s(best.num_workers),
                updt_s=best.result.updt_s,
                samples_per_s=dense_model.predicted_samples_per_s(best.num_workers),
                detail=f"a sample reads in {dense * 1000:.1f} ms instead of "
                f"{loader.decode_s_per_sample * 1000:.1f} ms (measured)",
            )
        )
        small_decode = self.decode_s(spec, variant(half, 2)) * scale
        small_spec = ModelSpec(**{**asdict(spec), "image_size": half})
        probe = run_probe(
            self.batch_request(small_spec, winner.variant, decision.batch_size, memory_limit, "search"),
            self.cfg.probe_timeout_s,
        )
        if probe.fits:
            small = LoaderModel(decision.batch_size, small_decode, probe.step_time_s, loader.cores)
            workers = min(loader.cores, small.workers_needed)
            remedies.append(
                Remedy(
                    what=f"cameras at {half[0]}x{half[1]} instead of {h}x{w}",
                    measured=True,
                    data_s=small.predicted_data_s(workers),
                    updt_s=probe.step_time_s,
                    samples_per_s=small.predicted_samples_per_s(workers),
                    detail=f"a sample reads in {small_decode * 1000:.1f} ms and the step takes "
                    f"{probe.step_time_s:.3f} s at batch {decision.batch_size} (measured)",
                )
            )
        return remedies

    def build_profile(
        self,
        module: Any,
        policy_cfg: Any,
        data: DatasetShape,
        conditions: Conditions,
        fingerprint: fp.Fingerprint,
        winner: VariantOutcome,
        outcomes: list[VariantOutcome],
        study: StudyOutcome,
        memory_limit: int,
    ) -> Profile:
        cfg = self.cfg
        search, decision = winner.search, winner.decision
        assert decision is not None
        batch = decision.batch_size
        best = study.best
        default = study.lerobot_default
        measured = decision.soak_result or search.result_at(batch)
        if measured is not None and measured.fits:
            peak_alloc, peak_reserved = measured.peak_allocated_bytes, measured.peak_reserved_bytes
        elif winner.model is not None:
            peak_alloc = peak_reserved = int(winner.model.fixed_bytes + winner.model.per_sample_bytes * batch)
        else:
            peak_alloc, peak_reserved = best.result.peak_allocated_bytes, best.result.peak_reserved_bytes
        at_max = search.result_at(search.max_batch)
        policy_args = module.lerobot_args(policy_cfg)
        args = lerobot_train_args(
            policy_args=policy_args,
            dataset_repo_id=data.repo_id,
            dataset_root=str(data.root.resolve()),
            device=cfg.device,
            precision=winner.variant.precision,
            batch_size=batch,
            num_workers=best.num_workers,
            prefetch_factor=best.prefetch_factor,
            grad_accum_steps=decision.grad_accum_steps,
        )
        notes = []
        if data.kind == "synthetic":
            notes.append(
                "tuned on autotune's synthetic dataset: point --dataset.repo_id/--dataset.root at "
                "your own data (or tune with --dataset) before training"
            )
        if winner.variant.grad_checkpointing:
            notes.append(
                "the batch assumes gradient checkpointing, which released lerobot-train does not "
                "have for ACT or SmolVLA; without it use a profile tuned with --no-grad-checkpointing"
            )
        if search.capped:
            notes.append(f"the search stopped at --max-batch {cfg.max_batch} without running out of memory")
        if peak_reserved > (1 - cfg.headroom) * memory_limit:
            notes.append(
                f"the {cfg.headroom:.0%} headroom cannot be kept: batch {batch} already peaks at "
                f"{format_bytes(peak_reserved)} of the {format_bytes(memory_limit)} budget"
            )
        if decision.lowered_by_soak:
            failed = [s for s in decision.soaks if s.lowered]
            notes.append(
                "the soak lowered the batch: "
                + ", ".join(f"batch {s.batch_size} failed ({s.reason})" for s in failed)
            )
        if batch < decision.headroom_batch and not decision.lowered_by_soak and decision.target_batch is None:
            notes.append(
                f"batch {batch} is faster than the largest batch within the headroom "
                f"({decision.headroom_batch}), so it is recommended"
            )
        undrained = [t for t in study.trials if t.result.fits and not t.result.drained]
        if undrained:
            notes.append(
                f"{len(undrained)} worker trial(s) stopped before their prefetched batches were used "
                "up; their data_s may be optimistic"
            )
        comparisons = [_comparison(o) for o in outcomes]
        if len(outcomes) > 1:
            notes.extend(_comparison_notes(outcomes))
        speedup = None
        if default is not None and default.result.samples_per_s > 0:
            speedup = best.result.samples_per_s / default.result.samples_per_s
        plots = self.plots(winner, study, memory_limit)
        return Profile(
            policy=cfg.policy,
            run_id=self.run_id,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            fingerprint=fingerprint.to_dict(),
            conditions=conditions,
            precision=winner.variant.precision,
            grad_checkpointing=winner.variant.grad_checkpointing,
            max_batch_size=search.max_batch,
            certified=search.certified,
            batch_size=batch,
            headroom_batch_size=decision.headroom_batch,
            grad_accum_steps=decision.grad_accum_steps,
            num_workers=best.num_workers,
            prefetch_factor=best.prefetch_factor,
            data_s=best.result.data_s,
            updt_s=best.result.updt_s,
            samples_per_s=best.result.samples_per_s,
            peak_allocated_bytes=int(peak_alloc),
            peak_reserved_bytes=int(peak_reserved),
            max_batch_peak_reserved_bytes=at_max.peak_reserved_bytes if at_max else 0,
            memory_model=winner.model.to_dict() if winner.model else None,
            throughput_curve=[asdict(p) for p in decision.curve],
            soaks=[asdict(s) for s in decision.soaks],
            comparisons=comparisons,
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
            plots=plots,
            loader_model=None,
            input_bound=None,
            lerobot_train_args=args,
            lerobot_train_command=command_line(args),
            notes=notes,
        )

    def plots(self, winner: VariantOutcome, study: StudyOutcome, memory_limit: int) -> dict[str, str]:
        cfg = self.cfg
        decision = winner.decision
        assert decision is not None
        folder = cfg.results / "plots"
        probe_rows = [
            {
                "batch_size": p.batch_size,
                "status": p.status,
                "peak_reserved_bytes": p.peak_reserved_bytes,
                "samples_per_s": p.samples_per_s,
            }
            for p in winner.search.probes
        ] + [
            {
                "batch_size": p.batch_size,
                "status": "ok",
                "peak_reserved_bytes": p.peak_reserved_bytes,
                "samples_per_s": p.samples_per_s,
            }
            for p in decision.curve
            if p.phase != "search"
        ]
        title = f"{cfg.policy}, {winner.variant.label}, run {self.run_id}"
        batch_png = plot_batch(
            folder / f"{cfg.policy}-{self.run_id}-batch.png",
            title=title,
            probes=probe_rows,
            budget_bytes=memory_limit,
            headroom=cfg.headroom,
            max_batch=winner.search.max_batch,
            batch_size=decision.batch_size,
            fit=(winner.model.fixed_bytes, winner.model.per_sample_bytes) if winner.model else None,
        )
        trial_rows = [
            {
                "num_workers": t.num_workers,
                "prefetch_factor": t.prefetch_factor,
                "samples_per_s": t.result.samples_per_s,
                "data_s": t.result.data_s,
                "updt_s": t.result.updt_s,
                "status": t.result.status,
            }
            for t in study.trials
        ]
        workers_png = plot_workers(
            folder / f"{cfg.policy}-{self.run_id}-workers.png",
            title=f"{title}, batch {decision.batch_size}",
            trials=trial_rows,
            chosen=study.best.num_workers,
        )
        return {"batch": str(batch_png), "workers": str(workers_png)}


def _comparison(o: VariantOutcome) -> Comparison:
    d = o.decision
    return Comparison(
        precision=o.variant.precision,
        grad_checkpointing=o.variant.grad_checkpointing,
        max_batch_size=o.search.max_batch,
        batch_size=d.batch_size if d else 0,
        samples_per_s=o.samples_per_s,
        per_sample_bytes=o.model.per_sample_bytes if o.model else None,
        probes=len(o.search.probes),
    )


def _comparison_notes(outcomes: list[VariantOutcome]) -> list[str]:
    """What gradient checkpointing costs in speed and buys in memory, per precision."""
    notes = []
    by_key = {(o.variant.precision, o.variant.grad_checkpointing): o for o in outcomes}
    for precision in dict.fromkeys(o.variant.precision for o in outcomes):
        on, off = by_key.get((precision, True)), by_key.get((precision, False))
        if not on or not off or not on.decision or not off.decision:
            continue
        text = f"{precision}: checkpointing fits batch {on.search.max_batch} against {off.search.max_batch} without"
        if on.model and off.model:
            text += (
                f" ({format_bytes(on.model.per_sample_bytes)} per sample against "
                f"{format_bytes(off.model.per_sample_bytes)})"
            )
        if off.samples_per_s > 0:
            text += f", at {on.samples_per_s / off.samples_per_s:.2f}x the samples/s"
        notes.append(text)
    return notes


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
        "decode_s_per_sample": round(r.decode_s_per_sample, 6),
        "drained": r.drained,
        "steps": r.steps,
        "wall_s": round(r.wall_s, 3),
        "message": r.message,
    }
