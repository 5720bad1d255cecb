"""Opening a run: everything that can fail early fails here, before the first probe.

:func:`open_run` reads (or writes) the dataset, works out the budgets, fingerprints the machine,
states the conditions and checks that the policy's settings make a ``lerobot-train`` command, and
returns the frozen :class:`RunContext` that every stage reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from autotune.errors import UserError
from autotune.machine import fingerprint as fp
from autotune.machine import host
from autotune.outputs.profile import Conditions
from autotune.outputs.results import ResultsWriter
from autotune.run.config import DEFAULT_CAMERAS, DEFAULT_IMAGE_SIZE, RunConfig, Variant
from autotune.run.datasets import DatasetShape, prepare_dataset
from autotune.run.lock import run_lock
from autotune.run.probe_client import run_probe
from autotune.run.results_folder import check_study_storage, ensure_writable
from autotune.trainer.decoder import Decoder, for_dataset, trainer_decoder
from autotune.units import format_bytes
from probes import catalogue
from probes.protocol import Environment, ModelSpec, ProbeRequest

log = logging.getLogger(__name__)

HOST_BUDGET_SHARE = 0.8  # of the available host memory, for the loader's workers by default
CPU_BUDGET_SHARE = 0.5  # of the available host memory, for a CPU probe by default


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run reads. Memory in bytes."""

    cfg: RunConfig
    run_id: str
    started_s: float  # time.perf_counter() at the start
    data: DatasetShape
    memory_limit: int
    host_budget: int  # host memory the loader's workers may use
    environment: Environment
    fingerprint: fp.Fingerprint
    conditions: Conditions
    policy_args: list[str]  # lerobot-train's --policy.* flags for these settings
    writer: ResultsWriter = field(compare=False)
    backend: str = "rebuilt"  # who measured: "rebuilt" or "lerobot X.Y" (the profile says it)
    decoder: Decoder = field(default_factory=lambda: Decoder("pyav", "pyav"))  # the videos' decoder

    def spec(self, variant: Variant, image_size: tuple[int, int] | None = None) -> ModelSpec:
        """The model to build for ``variant`` (at the data's camera size unless ``image_size``)."""
        return model_spec(self.cfg, self.data, variant, image_size)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started_s


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def model_spec(
    cfg: RunConfig, data: DatasetShape, variant: Variant, image_size: tuple[int, int] | None = None
) -> ModelSpec:
    return ModelSpec(
        policy=cfg.policy,
        cameras=data.cameras,
        image_size=image_size or data.image_size,
        state_dim=data.state_dim,
        action_dim=data.action_dim,
        gradient_checkpointing=variant.grad_checkpointing,
        overrides=dict(cfg.policy_overrides),
        backend=cfg.backend,
    )


def check_policy(cfg: RunConfig, spec: ModelSpec) -> list[str]:
    """The policy's configuration for ``spec`` is valid and makes a lerobot-train command: its
    ``--policy.*`` flags. Anything wrong is one line naming the setting."""
    if spec.backend == "lerobot":
        return catalogue.backend_policy_args(spec)  # checked by LeRobot itself: check_in_lerobot
    try:
        catalogue.build_config(spec)
        return catalogue.lerobot_policy_args(spec)
    except ValueError as exc:
        raise UserError(f"{cfg.policy} configuration: {exc}") from None


def check_planned(cfg: RunConfig) -> None:
    """The policy's settings at the synthetic dataset's shapes, known before it is written (a run on
    the user's data checks them once it has read the data); one line naming the setting."""
    if cfg.dataset is not None:
        return
    h, w = cfg.image_size or DEFAULT_IMAGE_SIZE
    planned = DatasetShape(
        root=cfg.results,
        repo_id="",
        kind="synthetic",
        cameras=cfg.cameras or DEFAULT_CAMERAS,
        image_size=(h, w),
        state_dim=cfg.state_dim,
        action_dim=cfg.action_dim,
    )
    check_policy(cfg, model_spec(cfg, planned, Variant(cfg.precision, cfg.grad_checkpointing)))


def check_in_lerobot(cfg: RunConfig, data: DatasetShape) -> RunConfig:
    """Build the policy once with LeRobot's own code on the dataset (a describe probe): LeRobot's
    parser checks every setting, the policy must exist in it and build here. A policy that cannot
    be built here (it needs the Hugging Face hub for a VLM's config or tokenizer and cannot reach
    it, or a LeRobot extra that is not installed) falls back to autotune's rebuild where there is
    one; anything else wrong is one line."""
    spec = model_spec(cfg, data, Variant(cfg.precision, cfg.grad_checkpointing))
    request = ProbeRequest(kind="describe", model=spec, device=cfg.device, dataset_root=str(data.root))
    log.info("building %s with lerobot %s's own code to check its settings", cfg.policy, cfg.trainer.version)
    result = run_probe(request, cfg.probe_timeout_s)
    if result.fits:
        description = result.description or {}
        for note in description.get("notes", []):
            log.info("lerobot backend: %s", note)
        if not description.get("grad_checkpointing") and any(v.grad_checkpointing for v in cfg.variants()):
            raise UserError(
                f"lerobot {cfg.trainer.version}'s {cfg.policy} has no gradient checkpointing; drop "
                "--grad-checkpointing and --compare, or pass --backend rebuilt"
            )
        return cfg
    unbuildable = bool((result.description or {}).get("unbuildable"))
    if unbuildable and cfg.policy in catalogue.POLICIES:
        log.warning(
            "%s; measuring autotune's rebuild of %s instead (--backend rebuilt)", result.message, cfg.policy
        )
        return dataclasses.replace(cfg, backend="rebuilt", policy_overrides=_rebuilt_overrides(cfg))
    if unbuildable:
        raise UserError(result.message)
    raise UserError(f"{cfg.policy} in lerobot {cfg.trainer.version}: {result.message}")


def _rebuilt_overrides(cfg: RunConfig) -> dict[str, object]:
    try:
        return catalogue.parse_overrides(cfg.policy, [f"{k}={v}" for k, v in cfg.policy_overrides.items()])
    except ValueError as exc:
        raise UserError(f"{cfg.policy} configuration: {exc}") from None


def check_ranks(cfg: RunConfig, environment: Environment) -> None:
    """``--gpus N`` needs N GPUs from the run's first (CUDA), or N cores for N gloo ranks (CPU)."""
    if cfg.gpus <= 1:
        return
    if cfg.backend == "lerobot":
        raise UserError(
            f"--gpus {cfg.gpus}: the LeRobot backend measures one process only for now; add --backend rebuilt"
        )
    index = cfg.gpu_index
    if index is None:
        cores = os.cpu_count() or 1
        if cfg.gpus > cores:
            raise UserError(
                f"--gpus {cfg.gpus}: on the CPU each rank needs a core, and this machine has {cores}"
            )
        return
    visible = len(environment.devices)
    if index + cfg.gpus > visible:
        raise UserError(
            f"--gpus {cfg.gpus} from {cfg.device}: torch sees {visible} GPU(s) (cuda:0 to "
            f"cuda:{visible - 1}); use at most --gpus {max(visible - index, 1)}"
        )


def default_memory_limit(cfg: RunConfig, environment: Environment) -> int:
    """The card's free memory on CUDA (its total where NVML cannot read memory: the probe child
    then reports the cap it really had); half the host's available memory on CPU."""
    index = cfg.gpu_index
    if index is not None:
        gpu = fp.gpu_info(index, environment)  # torch's view where NVML cannot tell
        if gpu is None:
            raise UserError(f"device {cfg.device}: no NVIDIA GPU found; use --device cpu")
        if gpu.memory_free_bytes:
            return gpu.memory_free_bytes
        facts = fp.torch_device(environment, index)
        if facts is not None:
            return facts.total_memory_bytes
        raise UserError(
            f"device {cfg.device}: neither NVML nor torch can read its memory; pass --memory-limit"
        )
    return int(host.available_bytes() * CPU_BUDGET_SHARE)


def describe_run(ctx: RunContext) -> str:
    data = ctx.data
    return (
        f"run {ctx.run_id}: {ctx.cfg.policy} on {ctx.fingerprint.gpu_name or ctx.cfg.device}, budget "
        f"{format_bytes(ctx.memory_limit)}, {data.cameras} camera(s) {data.image_size[0]}x{data.image_size[1]}"
    )


@contextlib.contextmanager
def open_run(cfg: RunConfig, environment: Environment) -> Iterator[RunContext]:
    """Everything a run needs before its first probe, checked (one line and exit 2 for what is
    wrong), with the results folder's lock for ``policy`` held while the run lasts."""
    with contextlib.ExitStack() as held:
        yield _open(cfg, environment, held)


def _open(cfg: RunConfig, environment: Environment, held: contextlib.ExitStack) -> RunContext:
    started_s = time.perf_counter()
    requested = Variant(cfg.precision, cfg.grad_checkpointing)
    check_ranks(cfg, environment)  # before the dataset's child, the first that runs
    if cfg.dataset is not None:
        data = prepare_dataset(cfg)  # read only: nothing is written for a broken dataset
        policy_args = check_policy(cfg, model_spec(cfg, data, requested))
        ensure_writable(cfg.results, synthetic=False)
        held.enter_context(run_lock(cfg.results, cfg.policy, wait=cfg.wait))
        check_study_storage(cfg)  # before any row
    else:
        check_planned(cfg)  # the synthetic dataset's shapes are known before it is written
        ensure_writable(cfg.results)
        held.enter_context(run_lock(cfg.results, cfg.policy, wait=cfg.wait))
        check_study_storage(cfg)  # before the dataset is written and before any row
        data = prepare_dataset(cfg)
        policy_args = check_policy(cfg, model_spec(cfg, data, requested))
    if cfg.backend == "lerobot":
        cfg = check_in_lerobot(cfg, data)
        policy_args = check_policy(cfg, model_spec(cfg, data, requested))
    memory_limit = cfg.memory_limit_bytes or default_memory_limit(cfg, environment)
    fingerprint = fp.take(cfg.device, environment, cfg.trainer.version)
    decoder = for_dataset(trainer_decoder(cfg.trainer, environment), data.undecodable, cfg.trainer.label)
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
        lerobot_version=cfg.trainer.version,
        beside_precision=cfg.mission_precision,
        backend=cfg.backend,
        gpus=cfg.gpus,
        cuda_alloc_conf=fingerprint.cuda_alloc_conf,  # the allocator's settings (CUDA only)
        video_backend=decoder.measured,
    )
    run_id = new_run_id()
    writer = ResultsWriter(
        cfg.results,
        {
            "run_id": run_id,
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
        },
    )
    host_budget = cfg.host_memory_limit_bytes or int(HOST_BUDGET_SHARE * host.available_bytes())
    return RunContext(
        cfg=cfg,
        run_id=run_id,
        started_s=started_s,
        data=data,
        memory_limit=memory_limit,
        host_budget=host_budget,
        environment=environment,
        fingerprint=fingerprint,
        conditions=conditions,
        policy_args=policy_args,
        writer=writer,
        backend=f"lerobot {cfg.trainer.version}" if cfg.backend == "lerobot" else "rebuilt",
        decoder=decoder,
    )
