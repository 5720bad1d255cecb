"""The LeRobot backend: probes measured with the user's LeRobot itself, for any policy it has.

Where LeRobot is importable in the probe child's Python, a probe parses the same ``lerobot-train``
arguments the tuner will print (LeRobot's own config classes, through draccus), builds the dataset,
the policy, its pre-processor, the optimizer and the scheduler through LeRobot's factories, and
trains with LeRobot's own ``update_policy`` under an ``Accelerator`` set up the way
``lerobot-train`` sets it up (its autocast and gradient clipping). So memory and time are the
trainer's, with the trainer's torch. Checked against lerobot 0.6.1's ``scripts/lerobot_train.py``;
releases whose ``update_policy`` takes no ``accelerator`` (0.3) are refused with one line.

Pretrained weights are never needed to measure: a torchvision backbone's ImageNet weights
(``pretrained_backbone_weights``) are left out, which changes no shape. A policy that needs the
Hugging Face hub even without weights (a VLM's config, processor or tokenizer) fails with
:class:`NeedsHub`, naming what it wanted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import io
import itertools
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import torch

from probes.catalogue import backend_policy_args
from probes.device import MemoryMeter, resolve_device
from probes.policies.common import count_params
from probes.protocol import ProbeRequest
from probes.train_step import MAX_WARMUP_STEPS
from probes.training import timed_steps

log = logging.getLogger("probes.child")

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
    args += [f"--seed={request.seed}", f"--output_dir={output_dir}", "--wandb.enable=false"]
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


class Step:
    """LeRobot's ``update_policy`` as a probe's training step (``__call__`` returns the loss)."""

    def __init__(self, session: Session, precision: str) -> None:
        self.session = session
        self.model = session.policy
        self.precision = precision
        self.scaler = torch.amp.GradScaler(enabled=False)  # accelerate holds the real one
        self._states = -1
        self.stepped = False

    def optimizer_ready(self) -> bool:
        """Whether the optimizer holds its state: it exists and the last step added none."""
        return self.stepped

    def __call__(self, batch: dict[str, Any]) -> float:
        s = self.session
        s.tracker, _ = s.update(
            s.tracker, s.policy, batch, s.optimizer, s.cfg.optimizer.grad_clip_norm, s.accelerator,
            lr_scheduler=s.scheduler,
        )  # fmt: skip
        states = len(s.optimizer.state)
        self.stepped = states > 0 and states == self._states
        self._states = states
        return float(s.tracker.loss.val) if hasattr(s.tracker.loss, "val") else 0.0


def warm_up(step: Step, run_step: Any, min_steps: int) -> int:
    """At least ``min_steps`` steps, and until the optimizer's state stopped growing."""
    done = 0
    while done < min_steps or not step.optimizer_ready():
        if done >= max(min_steps, MAX_WARMUP_STEPS):
            raise RuntimeError(
                f"the optimizer holds no settled state after {done} warm-up steps at {step.precision}"
            )
        run_step(done)
        done += 1
    return done


def one_batch(session: Session, batch_size: int, seed: int) -> dict[str, Any]:
    """``batch_size`` samples of the dataset, read by LeRobot's dataset class in this process."""
    rng = random.Random(seed)
    n = len(session.dataset)
    indices = [rng.randrange(n) for _ in range(batch_size)]
    sampler = torch.utils.data.SubsetRandomSampler(indices, generator=torch.Generator().manual_seed(seed))
    loader = session.loader(batch_size, 0, None, False, None, seed)
    loader = torch.utils.data.DataLoader(
        session.dataset, batch_size=batch_size, sampler=sampler, collate_fn=loader.collate_fn
    )
    return next(iter(loader))


def run_batch_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """LeRobot's training step on real samples of the dataset at ``request.batch_size``: peak
    memory and step time (one batch read once, trained on every step)."""
    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=on_exceed)
    session = open_session(request, meter)
    step = Step(session, request.precision)
    raw = one_batch(session, request.batch_size, request.seed)
    fields = timed_steps(request, device, meter, step, lambda _: session.prepare(dict(raw)), warm_up)
    return {
        **fields,
        **session.param_counts(),
        "message": fields["message"] or "; ".join(session.notes),
    }


def time_samples(dataset: Any, seed: int, samples: int = 6) -> float:
    """Seconds one process takes to read one sample through LeRobot's dataset class."""
    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(samples + 1)]
    dataset[indices[0]]
    t0 = time.perf_counter()
    for i in indices[1:]:
        dataset[i]
    return (time.perf_counter() - t0) / samples


def run_decode_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    session = open_session(request, None)
    decode_s = time_samples(session.dataset, request.seed, samples=max(4, request.measure_steps))
    return {"status": "ok", "decode_s_per_sample": decode_s, "steps": request.measure_steps}


def run_worker_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """LeRobot's dataset through the DataLoader lerobot-train builds, into LeRobot's step: data_s
    (the next batch and the pre-processor, as lerobot-train 0.4 to 0.6.1 count it) and updt_s."""
    from probes.loading import drive

    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=None)
    session = open_session(request, meter, num_workers=request.num_workers)
    step = Step(session, request.precision)
    decode_s = time_samples(session.dataset, request.seed)
    loader = session.loader(
        request.batch_size, request.num_workers, request.prefetch_factor, request.persistent_workers,
        request.multiprocessing_context, request.seed,
    )  # fmt: skip
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # lerobot-train's cycle()
    fields = drive(
        request, device, meter, step, batches, session.prepare, decode_s, lambda s, run, n: warm_up(s, run, n)
    )
    return {**fields, **session.param_counts()}


def run_describe_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Check the arguments and build the policy once: LeRobot's version, its policies, the
    parameter counts, whether the policy has gradient checkpointing, and the notes."""
    assert request.model is not None
    description: dict[str, Any] = {"lerobot_version": version(), "policies": known_policies()}
    try:
        session = open_session(request, None)
    except NeedsHub as exc:
        return {"status": "error", "message": str(exc), "description": {**description, "unbuildable": True}}
    except ImportError as exc:  # a LeRobot extra that is not installed (lerobot[smolvla], ...)
        message = f"lerobot's {request.model.policy} cannot be built here: {str(exc).strip().splitlines()[0]}"
        return {"status": "error", "message": message, "description": {**description, "unbuildable": True}}
    except ValueError as exc:
        return {"status": "error", "message": str(exc), "invalid_input": True, "description": description}
    fields = dataclasses.fields(session.cfg.policy)
    description |= {
        "grad_checkpointing": any(f.name == CHECKPOINTING_FIELD for f in fields),
        "notes": session.notes,
        **session.param_counts(),
    }
    return {"status": "ok", "description": description, **session.param_counts()}
