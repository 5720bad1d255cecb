"""What each lerobot-train release accepts and does, for ACT and SmolVLA: one row per range of
releases, each read from LeRobot's own source at its tag (file and tag cited per row; "main" is the
branch at commit 7427f31, 2026-08-23, version 0.6.2.dev; 0.7.0 from its release notes). A version
between two rows has the abilities of the row below it (:func:`autotune.trainer.versions.abilities`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Abilities:
    """What one range of lerobot-train releases accepts and does, for ACT and SmolVLA."""

    since: str  # the first version with these abilities
    source: str  # where they were read
    # Mixed precision, per precision name: how to ask for it ("flag:--x=y", "env:NAME=value"), per
    # device type; a precision missing for a device cannot be reproduced there.
    precision: dict[str, dict[str, str]]
    grad_accumulation_flag: str | None  # None: no gradient accumulation
    grad_checkpointing_policies: tuple[str, ...]  # policies with --policy.gradient_checkpointing
    prefetch_flag: bool  # --prefetch_factor exists
    fixed_prefetch: int | None  # without the flag: the prefetch the loop always uses (None: torch's)
    persistent_workers: bool  # the loader keeps its workers across epochs
    start_method: str | None  # the workers' start method (None: the platform's, fork on Linux)
    start_method_flag: bool  # --dataloader_multiprocessing_context exists
    data_s_includes_prep: bool  # data_s holds the preprocessing and device copy (else prep_s does)
    dataset_format: str  # the LeRobotDataset version it reads
    multi_gpu: str  # how several GPUs are launched
    flags: frozenset[str] = field(default_factory=frozenset)  # top-level flags autotune may print
    # The default video backend falls back to PyAV where torchcodec is installed but cannot load
    # (utils/import_utils.py@v0.6.1); before, an installed torchcodec is picked and then fails.
    torchcodec_fallback: bool = False
    # The flag that turns the run's experiment tracker off (verify, the LeRobot backend's probes).
    tracker_off: str = "--wandb.enable=false"


_COMMON = frozenset(
    {
        "--dataset.repo_id",
        "--dataset.root",
        "--dataset.video_backend",
        "--policy.type",
        "--policy.device",
        "--policy.push_to_hub",
        "--policy.use_amp",
        "--policy.pretrained_backbone_weights",
        "--batch_size",
        "--num_workers",
        "--steps",
        "--log_freq",
        "--save_checkpoint",
        "--wandb.enable",
        "--output_dir",
    }
)
_ENV_BF16 = "env:ACCELERATE_MIXED_PRECISION=bf16"
_ENV_FP16 = "env:ACCELERATE_MIXED_PRECISION=fp16"

RELEASES: tuple[Abilities, ...] = (
    Abilities(
        since="0.3",
        # src/lerobot/scripts/train.py@v0.3.3 (autocast + GradScaler under use_amp, no accelerate,
        # the DataLoader with torch's defaults); configs/train.py@v0.3.3; CODEBASE_VERSION v2.1.
        source="src/lerobot/scripts/train.py@v0.3.3",
        precision={
            "cuda": {"fp16": "flag:--policy.use_amp=true"},
            "cpu": {"bf16": "flag:--policy.use_amp=true"},
        },
        grad_accumulation_flag=None,
        grad_checkpointing_policies=(),
        prefetch_flag=False,
        fixed_prefetch=None,
        persistent_workers=False,
        start_method=None,
        start_method_flag=False,
        data_s_includes_prep=False,
        dataset_format="v2.1",
        multi_gpu="not supported (one process)",
        flags=_COMMON,
    ),
    Abilities(
        since="0.4",
        # src/lerobot/scripts/lerobot_train.py@v0.4.4: Accelerator without mixed_precision (so
        # ACCELERATE_MIXED_PRECISION decides; use_amp is not read), prefetch_factor=2 fixed, no
        # persistent workers; data_s = next() + preprocessor; v3.0 datasets. Same at v0.5.1.
        source="src/lerobot/scripts/lerobot_train.py@v0.4.4",
        precision={"cuda": {"fp16": _ENV_FP16, "bf16": _ENV_BF16}, "cpu": {"bf16": _ENV_BF16}},
        grad_accumulation_flag=None,
        grad_checkpointing_policies=("pi0", "pi05", "pi0_fast"),
        prefetch_flag=False,
        fixed_prefetch=2,
        persistent_workers=False,
        start_method=None,
        start_method_flag=False,
        data_s_includes_prep=True,
        dataset_format="v3.0",
        multi_gpu="accelerate launch --num_processes=N $(which lerobot-train) ...",
        flags=_COMMON,
    ),
    Abilities(
        since="0.6.0",
        # lerobot_train.py@v0.6.0: --prefetch_factor (4) and --persistent_workers (true); mixed
        # precision from policy.dtype, which ACT and SmolVLA lack, so still the environment's.
        source="src/lerobot/scripts/lerobot_train.py@v0.6.0",
        precision={"cuda": {"fp16": _ENV_FP16, "bf16": _ENV_BF16}, "cpu": {"bf16": _ENV_BF16}},
        grad_accumulation_flag=None,
        grad_checkpointing_policies=("pi0", "pi05", "pi0_fast", "eo1", "molmoact2"),
        prefetch_flag=True,
        fixed_prefetch=None,
        persistent_workers=True,
        start_method=None,
        start_method_flag=False,
        data_s_includes_prep=True,
        dataset_format="v3.0",
        multi_gpu="accelerate launch --num_processes=N $(which lerobot-train) ...",
        flags=_COMMON | {"--prefetch_factor", "--persistent_workers"},
    ),
    Abilities(
        since="0.6.1",
        # lerobot_train.py@v0.6.1 L246-262: use_amp=true is torch's autocast dtype of the device
        # (fp16 on CUDA) when the policy has no dtype; otherwise ACCELERATE_MIXED_PRECISION still
        # decides. --dataloader_multiprocessing_context, default spawn (configs/train.py@v0.6.1).
        source="src/lerobot/scripts/lerobot_train.py@v0.6.1",
        precision={
            "cuda": {"fp16": "flag:--policy.use_amp=true", "bf16": _ENV_BF16},
            "cpu": {"bf16": _ENV_BF16},
        },
        grad_accumulation_flag=None,
        grad_checkpointing_policies=("pi0", "pi05", "pi0_fast", "eo1", "molmoact2", "diffusion"),
        prefetch_flag=True,
        fixed_prefetch=None,
        persistent_workers=True,
        start_method="spawn",
        start_method_flag=True,
        data_s_includes_prep=True,
        dataset_format="v3.0",
        multi_gpu="accelerate launch --num_processes=N $(which lerobot-train) ...",
        flags=_COMMON | {"--prefetch_factor", "--persistent_workers", "--dataloader_multiprocessing_context"},
        torchcodec_fallback=True,
    ),
    Abilities(
        since="0.6.2.dev0",
        # main@7427f31: src/lerobot/configs/accelerator.py (mixed_precision no/fp16/bf16, gradient
        # accumulation), lerobot_train.py (data_s is next() only, prep_s apart; torchrun).
        source="src/lerobot/configs/accelerator.py@main(7427f31)",
        precision={
            "cuda": {
                "fp16": "flag:--accelerator.mixed_precision=fp16",
                "bf16": "flag:--accelerator.mixed_precision=bf16",
            },
            "cpu": {"bf16": "flag:--accelerator.mixed_precision=bf16"},
        },
        grad_accumulation_flag="--accelerator.gradient_accumulation.steps",
        grad_checkpointing_policies=("pi0", "pi05", "pi0_fast", "eo1", "molmoact2", "diffusion"),
        prefetch_flag=True,
        fixed_prefetch=None,
        persistent_workers=True,
        start_method="spawn",
        start_method_flag=True,
        data_s_includes_prep=False,
        dataset_format="v3.0",
        multi_gpu="torchrun --nproc-per-node=N $(which lerobot-train) ...",
        flags=_COMMON
        | {
            "--prefetch_factor",
            "--persistent_workers",
            "--dataloader_multiprocessing_context",
            "--accelerator.mixed_precision",
            "--accelerator.gradient_accumulation.steps",
        },
        torchcodec_fallback=True,  # utils/import_utils.py@main(7427f31)
    ),
)

# 0.7.0, from its release notes (the tag's source was not in this project's mirror, which stops at
# v0.6.1 and main of 2026-08-22): main's abilities, with --wandb.* renamed --trackio.*. Mixed
# precision is --accelerator.mixed_precision as on main, and accelerate's environment is refused
# unless LEROBOT_ALLOW_ACCELERATE_ENV=1, so no ACCELERATE_MIXED_PRECISION.
RELEASES = (
    *RELEASES,
    replace(
        RELEASES[-1],
        since="0.7.0",
        source="release notes of v0.7.0",
        flags=(RELEASES[-1].flags - {"--wandb.enable"}) | {"--trackio.enable"},
        tracker_off="--trackio.enable=false",
    ),
)
