"""LeRobot's training step: uint8 frames normalised on the device, autocast, backward, clip, AdamW."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from probes.keys import ACTION, STATE, is_image_key

# ImageNet statistics: what LeRobot's ACT normalises camera frames with when pretrained backbones
# are used, and a sensible per-channel default for any policy.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The most warm-up steps a probe takes waiting for the optimizer's first real step. fp16's gradient
# scaler skips ``optimizer.step()`` while its scale calibrates (starting at 2**16 and halving at each
# overflow): ACT skipped 5 steps on the CPU; 32 halvings reach 2**-16, past any finite gradient.
MAX_WARMUP_STEPS = 32

# The autocast dtype of each precision name the tuner uses (probes.protocol.PRECISIONS).
DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}


@dataclass
class FeatureStats:
    """Mean and standard deviation used to normalise one low-dimensional feature."""

    mean: torch.Tensor
    std: torch.Tensor


def prepare_batch(
    batch: Mapping[str, Any],
    device: torch.device,
    stats: Mapping[str, FeatureStats] | None = None,
) -> dict[str, Any]:
    """Move a loader batch to ``device`` and normalise it there, as LeRobot's preprocessor does.

    Camera frames arrive as uint8 ``(B, 3, H, W)`` and become float in [0, 1], then are
    normalised per channel. ``observation.state`` and ``action`` are normalised with ``stats``
    when given. Tensors of other keys are moved as they are; non-tensors (task strings) pass.
    """
    stats = stats or {}
    out: dict[str, Any] = {}
    non_blocking = device.type == "cuda"
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        value = value.to(device, non_blocking=non_blocking)
        if is_image_key(key):
            mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
            value = (value.float().div_(255.0) - mean) / std
        elif key in (STATE, ACTION):
            value = value.float()
            if key in stats:
                s = stats[key]
                value = (value - s.mean.to(device)) / s.std.to(device).clamp_min(1e-8)
        out[key] = value
    return out


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast at ``precision`` on ``device``; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW over the model's LeRobot parameter groups with the policy's settings."""
    return torch.optim.AdamW(
        model.param_groups(),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


class TrainStep:
    """One LeRobot optimisation step for a model; ``__call__`` returns the loss as a float.

    The call ends with ``loss.item()``, which synchronises the device, as LeRobot's ``updt_s``
    does. fp16 uses a gradient scaler, as LeRobot's AMP path does; while its scale calibrates it
    skips the optimizer's step, and AdamW's state (twice the trainable weights) does not exist yet:
    :func:`warm_up` waits for it.
    """

    def __init__(self, model: nn.Module, cfg: Any, device: torch.device, precision: str) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimized = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.stepped = False  # the last step left optimizer state for every parameter with a gradient

    def optimizer_ready(self) -> bool:
        """Whether the optimizer holds state for every trainable parameter that had a gradient."""
        return self.stepped

    def __call__(self, batch: Mapping[str, Any]) -> float:
        self.model.train()
        with autocast_context(self.device, self.precision):
            loss = self.model(batch)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with_grad = [p for p in self.optimized if p.grad is not None]
        self.stepped = bool(with_grad) and all(p in self.optimizer.state for p in with_grad)
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.item())


class OptimizerNeverStepped(RuntimeError):
    """The warm-up ended without one real optimizer step: every step was skipped."""


def warm_up(
    step: TrainStep, run_step: Callable[[int], object], min_steps: int, max_steps: int = MAX_WARMUP_STEPS
) -> int:
    """Call ``run_step(i)`` (one training step through ``step``) at least ``min_steps`` times and
    until the optimizer holds state for every trainable parameter, so that the measured steps
    carry it at every precision; at most ``max_steps`` times. Returns the steps taken."""
    done = 0
    while done < min_steps or not step.optimizer_ready():
        if done >= max(min_steps, max_steps):
            scale = f" (its scale is now {step.scaler.get_scale():g})" if step.scaler.is_enabled() else ""
            raise OptimizerNeverStepped(
                f"the optimizer never stepped in {done} warm-up steps at {step.precision}: "
                f"the gradient scaler skipped every step{scale}, so the gradients are not finite"
                if step.scaler.is_enabled()
                else f"the optimizer holds no state after {done} warm-up steps at {step.precision}"
            )
        run_step(done)
        done += 1
    return done
