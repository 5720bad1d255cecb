"""One LeRobot training set-up in a probe child: ``lerobot-train``'s arguments parsed, and what they build."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import io
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from probes.catalogue import backend_policy_args
from probes.device import MemoryMeter, resolve_device
from probes.policies.common import count_params
from probes.protocol import ProbeRequest

REPO_ID = "local/autotune"  # any name does for a dataset read from its root
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # accelerate's names
# Config fields that download weights when set; left out to measure (the shapes do not change).
WEIGHT_FIELDS = ("pretrained_backbone_weights",)
# What LeRobot calls gradient checkpointing in its policy configs.
CHECKPOINTING_FIELD = "gradient_checkpointing"


class NeedsHub(RuntimeError):
    """Building the policy needed the Hugging Face hub (a config, processor or tokenizer)."""


def version() -> str:
    try:
        return importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def known_policies() -> list[str]:
    import lerobot.policies  # noqa: F401  (registers every policy config)
    from lerobot.configs.policies import PreTrainedConfig

    return sorted(PreTrainedConfig.get_known_choices())


def tracker_off() -> str:
    """The flag that keeps the run's tracker off: --trackio.* from LeRobot 0.7.0 (its release
    notes), --wandb.* before (autotune.trainer.versions keeps the same per version)."""
    from packaging.version import Version

    return "--trackio.enable=false" if Version(version()) >= Version("0.7.0") else "--wandb.enable=false"


def train_args(request: ProbeRequest, num_workers: int, output_dir: str) -> list[str]:
    """``lerobot-train``'s arguments for ``request``: what the tuner prints, plus what measuring
    needs (no weights downloaded, nothing pushed, an output folder of the probe's own)."""
    spec = request.model
    assert spec is not None and request.dataset_root is not None
    device = resolve_device(request.device)
    args = [f"--dataset.repo_id={REPO_ID}", f"--dataset.root={request.dataset_root}"]
    args += backend_policy_args(spec)
    args += [f"--policy.device={device.type}", "--policy.push_to_hub=false"]
    args += [f"--batch_size={request.batch_size}", f"--num_workers={num_workers}"]
    args += [f"--seed={request.seed}", f"--output_dir={output_dir}", tracker_off()]
    args += [f"--dataset.video_backend={request.video_backend}"]
    return args


def parse(args: list[str]) -> Any:
    """LeRobot's ``TrainPipelineConfig`` for ``args``; ``ValueError`` with LeRobot's one line."""
    import draccus
    import lerobot.policies  # noqa: F401
    from lerobot.configs.train import TrainPipelineConfig

    policy = next((a.partition("=")[2] for a in args if a.startswith("--policy.type=")), "")
    if policy not in known_policies():
        raise ValueError(
            f"lerobot {version()} has no policy {policy!r}: it has {', '.join(known_policies())}"
        )
    words = io.StringIO()
    try:
        with contextlib.redirect_stderr(words):
            cfg = draccus.parse(config_class=TrainPipelineConfig, args=args)
    except SystemExit:
        said = [line for line in words.getvalue().splitlines() if "error" in line.lower()]
        reason = said[-1].split("error:", 1)[-1].strip() if said else "lerobot refused the arguments"
        raise ValueError(reason) from None
    except Exception as exc:  # draccus' DecodingError and the configs' own checks
        raise ValueError(str(exc).strip().splitlines()[-1]) from None
    return cfg


@dataclass
class Session:
    """One LeRobot training set-up in this probe child."""

    cfg: Any
    device: torch.device
    accelerator: Any
    dataset: Any
    policy: Any
    preprocessor: Any
    optimizer: Any
    scheduler: Any
    update: Any  # lerobot_train.update_policy
    tracker: Any
    notes: list[str]

    def param_counts(self) -> dict[str, int]:
        params = list(self.policy.parameters())
        return {
            "total_params": count_params(params),
            "trainable_params": count_params(p for p in params if p.requires_grad),
        }

    def loader(
        self,
        batch_size: int,
        num_workers: int,
        prefetch: int | None,
        persistent: bool,
        context: str | None,
        seed: int,
    ) -> torch.utils.data.DataLoader:
        """The DataLoader as lerobot-train builds it (collate, pinning, worker options); samples
        drawn at random (lerobot-train's episode-aware sampler only orders them)."""
        from lerobot.utils import collate

        meta = self.dataset.meta
        collate_fn = collate.lerobot_collate_fn if getattr(meta, "has_language_columns", False) else None
        workers = num_workers > 0
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            collate_fn=collate_fn,
            prefetch_factor=prefetch if workers else None,
            persistent_workers=persistent and workers,
            multiprocessing_context=context if workers else None,
            generator=torch.Generator().manual_seed(seed),
        )

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """LeRobot's pre-processor: normalisation, the policy's own steps, the device copy."""
        return self.preprocessor(batch)


def _hub_words(exc: BaseException) -> str | None:
    """What the hub was asked for, if ``exc`` (or its cause) is the hub being unreachable."""
    seen = exc
    for _ in range(6):
        if seen is None:
            break
        name = type(seen).__name__
        text = str(seen)
        if name in (
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "ConnectError",
            "HFValidationError",
        ) or ("huggingface.co" in text or "hub" in text.lower() and "offline" in text.lower()):
            first = text.strip().splitlines()[0] if text.strip() else name
            return first[:200]
        seen = seen.__cause__ or seen.__context__
    return None


def _hub_names(policy_cfg: Any) -> list[str]:
    """The config's settings that name a hub repository (``org/name``), as ``field=value``."""
    named = []
    for f in dataclasses.fields(policy_cfg):
        value = getattr(policy_cfg, f.name, None)
        if isinstance(value, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not os.path.exists(value):
            named.append(f"{f.name}={value}")
    return named


def open_session(request: ProbeRequest, meter: MemoryMeter | None, num_workers: int = 0) -> Session:
    """Parse, build and prepare everything lerobot-train would for ``request``. The memory meter
    starts after the imports, where ``autotune verify`` takes lerobot-train's baseline."""
    assert request.model is not None
    import lerobot.datasets.factory as dataset_factory
    from accelerate import Accelerator
    from lerobot.optim.factory import make_optimizer_and_scheduler
    from lerobot.policies import make_policy, make_pre_post_processors
    from lerobot.scripts import lerobot_train
    from lerobot.utils.logging_utils import AverageMeter, MetricsTracker

    # From here on, as the trainer's own growth after its imports (autotune verify's baseline):
    # the dataset, the policy, the optimizer, the batches and the step.
    if meter is not None:
        meter.start()
    update = lerobot_train.update_policy
    if "accelerator" not in inspect.signature(update).parameters:
        raise ValueError(
            f"the LeRobot backend needs lerobot 0.4 or later (this is {version()}): use --backend rebuilt"
        )
    torch.manual_seed(request.seed)
    device = resolve_device(request.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    output_dir = os.path.join(os.environ.get("AUTOTUNE_PROBE_DIR", "/tmp"), f"lerobot-out-{os.getpid()}")
    cfg = parse(train_args(request, num_workers, output_dir))
    notes = []
    for name in WEIGHT_FIELDS:
        if getattr(cfg.policy, name, None):
            setattr(cfg.policy, name, None)
            notes.append(f"measured without downloading {name} (same shapes)")
    wants = request.model.gradient_checkpointing
    if hasattr(cfg.policy, CHECKPOINTING_FIELD):
        setattr(cfg.policy, CHECKPOINTING_FIELD, wants)
    elif wants:
        raise ValueError(f"lerobot {version()}'s {request.model.policy} has no gradient checkpointing")
    cfg.validate()
    accelerator = Accelerator(
        step_scheduler_with_optimizer=False,
        mixed_precision=MIXED_PRECISION[request.precision],
        cpu=device.type == "cpu",
    )
    make = getattr(dataset_factory, "make_train_eval_datasets", None)
    dataset = make(cfg)[0] if make is not None else dataset_factory.make_dataset(cfg)
    try:
        policy = make_policy(cfg=cfg.policy, ds_meta=dataset.meta)
        preprocessor, _ = make_pre_post_processors(policy_cfg=cfg.policy, dataset_stats=dataset.meta.stats)
    except Exception as exc:
        words = _hub_words(exc)
        if words is not None:
            wanted = _hub_names(cfg.policy)
            if wanted:
                words = f"{', '.join(wanted)}: {words}"
            raise NeedsHub(
                f"lerobot's {request.model.policy} needs the Hugging Face hub to be built ({words})"
            ) from None
        raise
    optimizer, scheduler = make_optimizer_and_scheduler(cfg, policy)
    policy, optimizer, scheduler = _prepare(accelerator, policy, optimizer, scheduler)
    meters = {
        "loss": AverageMeter("loss", ":.3f"),
        "grad_norm": AverageMeter("grdn", ":.3f"),
        "lr": AverageMeter("lr", ":0.1e"),
        "update_s": AverageMeter("updt_s", ":.3f"),
        "dataloading_s": AverageMeter("data_s", ":.3f"),
    }
    if torch.cuda.is_available():
        meters["gpu_mem_gb"] = AverageMeter("mem_gb", ":.2f")
    tracker_args = inspect.signature(MetricsTracker).parameters
    extra = {"accelerator": accelerator} if "accelerator" in tracker_args else {}
    tracker = MetricsTracker(request.batch_size, dataset.num_frames, dataset.num_episodes, meters, **extra)
    return Session(
        cfg, device, accelerator, dataset, policy, preprocessor, optimizer, scheduler, update, tracker, notes
    )


def _prepare(accelerator: Any, policy: Any, optimizer: Any, scheduler: Any) -> tuple[Any, Any, Any]:
    if scheduler is None:
        policy, optimizer = accelerator.prepare(policy, optimizer)
        return policy, optimizer, None
    return accelerator.prepare(policy, optimizer, scheduler)
