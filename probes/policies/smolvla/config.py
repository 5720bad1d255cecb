"""SmolVLA's configuration at LeRobot's defaults, its token counts and ``lerobot-train`` flags (torch-free)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any

from probes.policies.common import check_positive_int, flag_value

logger = logging.getLogger(__name__)

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
ATTENTION_MODES = ("cross_attn", "self_attn")


@dataclass
class Config:
    """SmolVLA with LeRobot's defaults, plus the SmolVLM2-500M architecture numbers."""

    # Dataset: cameras and their frame size (H, W); state/action widths before zero padding.
    cameras: int = 2
    image_size: tuple[int, int] = (480, 640)
    state_dim: int = 6
    action_dim: int = 6

    # LeRobot SmolVLAConfig defaults.
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32  # state zero-padded to this width
    max_action_dim: int = 32  # actions zero-padded to this width; the loss covers all of it
    resize_imgs_with_padding: tuple[int, int] = (512, 512)  # (width, height) fed to SigLIP
    tokenizer_max_length: int = 48  # language tokens; this probe always pads to it (worst case)
    num_vlm_layers: int = 16  # first N text layers of the VLM kept
    num_expert_layers: int = -1  # <= 0: as many as num_vlm_layers; else a divisor of it
    expert_width_multiplier: float = 0.75
    self_attn_every_n_layers: int = 2  # in cross_attn mode, layers i % n == 0 are joint self-attn
    attention_mode: str = "cross_attn"  # "cross_attn" or "self_attn"
    freeze_vision_encoder: bool = True
    train_expert_only: bool = True  # freezes the whole VLM (vision, connector, text, lm_head)
    train_state_proj: bool = True
    min_period: float = 4e-3  # sinusoidal time embedding period range
    max_period: float = 4.0

    # Optimiser (LeRobot's optimizer_* presets). Scheduler: cosine with 1,000 warmup steps.
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-10
    grad_clip_norm: float = 10.0

    # SmolVLM2-500M-Video-Instruct vision tower (SigLIP).
    vision_hidden: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    vision_patch_size: int = 16
    vision_image_size: int = 512  # sets the number of learned position embeddings
    vision_layer_norm_eps: float = 1e-6
    scale_factor: int = 4  # connector pixel shuffle

    # SmolVLM2-500M-Video-Instruct text model (SmolLM2).
    text_layers: int = 32  # layers in the checkpoint; only num_vlm_layers are built
    text_hidden: int = 960
    text_mlp: int = 2560
    text_heads: int = 15
    text_kv_heads: int = 5
    text_head_dim: int = 64
    vocab_size: int = 49280
    text_rope_theta: float = 10_000.0  # LeRobot's apply_rope base (the checkpoint says 100 000)
    text_rms_norm_eps: float = 1e-5

    # Probe settings that LeRobot does not have.
    gradient_checkpointing: bool = True  # checkpoint each joint text/expert layer when training
    attention: str = "eager"  # "eager": LeRobot's fp32 score matrix; "sdpa": fused kernel

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)
        self.resize_imgs_with_padding = tuple(int(v) for v in self.resize_imgs_with_padding)
        self.betas = tuple(float(v) for v in self.betas)
        self._check_sizes()
        self._check_vlm()
        self._check_expert()
        self._check_float_settings()

    def _check_sizes(self) -> None:
        """Counts and sizes are positive; the state and action fit their padded widths."""
        for name in (
            "cameras",
            "state_dim",
            "action_dim",
            "chunk_size",
            "n_action_steps",
            "max_state_dim",
            "max_action_dim",
            "tokenizer_max_length",
            "num_vlm_layers",
            "vision_hidden",
            "vision_layers",
            "vision_heads",
            "vision_mlp",
            "vision_patch_size",
            "vision_image_size",
            "scale_factor",
            "text_layers",
            "text_hidden",
            "text_mlp",
            "text_heads",
            "text_kv_heads",
            "text_head_dim",
            "vocab_size",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("image_size", "resize_imgs_with_padding"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) <= 0:
                raise ValueError(f"{name} must be two positive integers, got {value!r}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) must not exceed chunk_size ({self.chunk_size})"
            )
        if self.state_dim > self.max_state_dim:
            raise ValueError(f"state_dim {self.state_dim} exceeds max_state_dim {self.max_state_dim}")
        if self.action_dim > self.max_action_dim:
            raise ValueError(f"action_dim {self.action_dim} exceeds max_action_dim {self.max_action_dim}")

    def _check_vlm(self) -> None:
        """The VLM's shape holds together: a square image on a whole patch grid, whole heads, RoPE's
        even head width, and no more layers kept than the checkpoint has."""
        width, height = self.resize_imgs_with_padding
        if width != height:
            raise ValueError(
                f"resize_imgs_with_padding must be square (the connector assumes a square patch "
                f"grid), got {self.resize_imgs_with_padding!r}"
            )
        if width % self.vision_patch_size:
            raise ValueError(
                f"resize_imgs_with_padding {width} is not a multiple of vision_patch_size "
                f"{self.vision_patch_size}"
            )
        if (width // self.vision_patch_size) % self.scale_factor:
            raise ValueError(
                f"patch grid side {width // self.vision_patch_size} is not a multiple of "
                f"scale_factor {self.scale_factor}"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError(
                f"vision_hidden {self.vision_hidden} is not divisible by vision_heads {self.vision_heads}"
            )
        if self.text_heads % self.text_kv_heads:
            raise ValueError(
                f"text_heads {self.text_heads} is not a multiple of text_kv_heads {self.text_kv_heads}"
            )
        if self.text_head_dim % 2:
            raise ValueError(f"text_head_dim must be even for RoPE, got {self.text_head_dim}")
        if self.num_vlm_layers > self.text_layers:
            raise ValueError(
                f"num_vlm_layers {self.num_vlm_layers} exceeds the model's text_layers {self.text_layers}"
            )

    def _check_expert(self) -> None:
        """The action expert: a usable width, a known attention mode and implementation, and a layer
        layout LeRobot can run."""
        if self.expert_width_multiplier <= 0.0 or self.expert_hidden < 2:
            raise ValueError(
                f"expert_width_multiplier {self.expert_width_multiplier!r} gives no usable expert width"
            )
        if self.attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {self.attention_mode!r}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if self.num_expert_layers > 0 and self.num_vlm_layers % self.num_expert_layers:
            raise ValueError(
                f"num_expert_layers {self.num_expert_layers} does not divide num_vlm_layers "
                f"{self.num_vlm_layers}"
            )
        for layer in range(self.num_vlm_layers):
            expert = self.expert_index(layer)
            if expert is not None and self.is_cross_layer(layer) != self.has_cross_kv(expert):
                # LeRobot builds this layout and then fails on a shape mismatch in forward.
                raise ValueError(
                    f"num_expert_layers {self.num_expert_layers} with self_attn_every_n_layers "
                    f"{self.self_attn_every_n_layers} pairs VLM layer {layer} with an expert "
                    f"layer of the other attention kind"
                )

    def _check_float_settings(self) -> None:
        """The optimiser's, the time embedding's, the norms' and RoPE's real-valued settings are in range."""
        for name in (
            "lr",
            "eps",
            "grad_clip_norm",
            "min_period",
            "max_period",
            "vision_layer_norm_eps",
            "text_rope_theta",
            "text_rms_norm_eps",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_period <= self.min_period:
            raise ValueError(f"max_period {self.max_period} must exceed min_period {self.min_period}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    @property
    def expert_hidden(self) -> int:
        return int(self.text_hidden * self.expert_width_multiplier)

    @property
    def expert_mlp(self) -> int:
        """LeRobot's expert MLP width: 4 * int(2/3 width) rounded up to a multiple of 256."""
        width = 4 * int(2 * self.expert_hidden / 3)
        return 256 * math.ceil(width / 256)

    @property
    def expert_layers(self) -> int:
        return self.num_expert_layers if self.num_expert_layers > 0 else self.num_vlm_layers

    def expert_index(self, vlm_layer: int) -> int | None:
        """The expert layer paired with VLM layer ``vlm_layer``, or None where the expert skips."""
        stride = self.num_vlm_layers // self.expert_layers
        return None if vlm_layer % stride else vlm_layer // stride

    def is_cross_layer(self, vlm_layer: int) -> bool:
        """Whether VLM layer ``vlm_layer`` runs the expert as cross-attention to the VLM."""
        if self.attention_mode != "cross_attn":
            return False
        n = self.self_attn_every_n_layers
        return not (n > 0 and vlm_layer % n == 0)

    def has_cross_kv(self, expert_layer: int) -> bool:
        """Whether expert layer ``expert_layer`` reads VLM keys/values (LeRobot's rule)."""
        if self.attention_mode != "cross_attn":
            return False
        n = self.self_attn_every_n_layers
        return not (n > 0 and expert_layer % n == 0)


def tokens_per_camera(cfg: Config) -> int:
    """Image tokens one camera adds to the prefix after SigLIP and the pixel shuffle."""
    side = cfg.resize_imgs_with_padding[0] // cfg.vision_patch_size
    return (side // cfg.scale_factor) ** 2


def sequence_lengths(cfg: Config) -> dict[str, int]:
    """Prefix (images, language, state), suffix (actions) and total sequence lengths."""
    prefix = cfg.cameras * tokens_per_camera(cfg) + cfg.tokenizer_max_length + 1
    return {"prefix": prefix, "suffix": cfg.chunk_size, "total": prefix + cfg.chunk_size}


# Our field -> (LeRobot's --policy.<name>, LeRobot's default).
_LEROBOT_FIELDS: dict[str, tuple[str, Any]] = {
    "chunk_size": ("chunk_size", 50),
    "n_action_steps": ("n_action_steps", 50),
    "max_state_dim": ("max_state_dim", 32),
    "max_action_dim": ("max_action_dim", 32),
    "resize_imgs_with_padding": ("resize_imgs_with_padding", (512, 512)),
    "tokenizer_max_length": ("tokenizer_max_length", 48),
    "num_vlm_layers": ("num_vlm_layers", 16),
    "num_expert_layers": ("num_expert_layers", -1),
    "expert_width_multiplier": ("expert_width_multiplier", 0.75),
    "self_attn_every_n_layers": ("self_attn_every_n_layers", 2),
    "attention_mode": ("attention_mode", "cross_attn"),
    "freeze_vision_encoder": ("freeze_vision_encoder", True),
    "train_expert_only": ("train_expert_only", True),
    "train_state_proj": ("train_state_proj", True),
    "min_period": ("min_period", 4e-3),
    "max_period": ("max_period", 4.0),
    "lr": ("optimizer_lr", 1e-4),
    "betas": ("optimizer_betas", (0.9, 0.95)),
    "eps": ("optimizer_eps", 1e-8),
    "weight_decay": ("optimizer_weight_decay", 1e-10),
    "grad_clip_norm": ("optimizer_grad_clip_norm", 10.0),
}

# The VLM's shape comes from the hub checkpoint in LeRobot; no flag changes it.
_VLM_FIELDS = tuple(f.name for f in fields(Config) if f.name.startswith(("vision_", "text_"))) + (
    "scale_factor",
    "vocab_size",
)


def lerobot_args(cfg: Config) -> list[str]:
    """``lerobot-train`` flags selecting SmolVLA with every setting that differs from its defaults."""
    args = ["--policy.type=smolvla"]
    for name, (flag, default) in _LEROBOT_FIELDS.items():
        value = getattr(cfg, name)
        if value != default:
            args.append(f"--policy.{flag}={flag_value(value)}")
    reference = Config()
    changed = [name for name in _VLM_FIELDS if getattr(cfg, name) != getattr(reference, name)]
    if changed:
        logger.warning(
            "SmolVLA's VLM shape comes from the hub checkpoint; no flag carries %s",
            ", ".join(changed),
        )
    return args
