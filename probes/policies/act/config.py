"""ACT's configuration at LeRobot's defaults and the ``lerobot-train`` flags selecting it (torch-free)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from probes.policies.common import check_positive_int, flag_value

BACKBONE_STRIDE = 32  # every torchvision ResNet downsamples by 32 up to layer4
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
ACTIVATIONS = ("relu", "gelu")  # LeRobot also names "glu", which halves the width and cannot run


@dataclass
class Config:
    """ACT at LeRobot's defaults (``ACTConfig``, tuned for the bimanual ALOHA tasks)."""

    # Inputs and outputs: taken from the dataset in LeRobot, explicit here.
    cameras: int = 2  # camera streams, all the same size, through one shared backbone
    image_size: tuple[int, int] = (480, 640)  # (H, W) of every camera frame; nothing resizes it
    state_dim: int = 6  # observation.state width
    action_dim: int = 6  # action width

    # Action chunking.
    chunk_size: int = 100  # actions predicted per forward pass (decoder queries)
    n_action_steps: int = 100  # actions executed per prediction at inference; <= chunk_size

    # Vision backbone.
    vision_backbone: str = "resnet18"  # torchvision ResNet, FrozenBatchNorm2d, cut after layer4

    # Transformer.
    dim_model: int = 512  # hidden width of every transformer layer
    n_heads: int = 8  # attention heads
    dim_feedforward: int = 3200  # width of the feed-forward layers
    feedforward_activation: str = "relu"  # "relu" or "gelu"
    pre_norm: bool = False  # LayerNorm before (True) or after (False) each sub-block
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1

    # Variational objective.
    use_vae: bool = True  # encode the action chunk into a latent during training
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    dropout: float = 0.1  # in attention and feed-forward blocks
    kl_weight: float = 10.0  # loss = l1 + kl_weight * kld

    # Optimiser: AdamW, no LR schedule (LeRobot's ACT preset and AdamWConfig defaults).
    lr: float = 1e-5
    lr_backbone: float = 1e-5  # the backbone's own parameter group
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip_norm: float = 10.0

    # Memory: not in LeRobot. Checkpoint the backbone and every transformer layer.
    gradient_checkpointing: bool = True

    def __post_init__(self) -> None:
        for name in (
            "cameras",
            "state_dim",
            "action_dim",
            "chunk_size",
            "n_action_steps",
            "dim_model",
            "n_heads",
            "dim_feedforward",
            "n_encoder_layers",
            "n_decoder_layers",
            "latent_dim",
            "n_vae_encoder_layers",
        ):
            check_positive_int(name, getattr(self, name))
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size!r}")
        for value in self.image_size:
            check_positive_int("image_size", value)
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps={self.n_action_steps} exceeds chunk_size={self.chunk_size}")
        if self.dim_model % self.n_heads:
            raise ValueError(f"dim_model={self.dim_model} is not divisible by n_heads={self.n_heads}")
        if self.dim_model % 4:
            # The 2D sine embedding gives each axis dim_model / 2 channels, in sin/cos pairs.
            raise ValueError(f"dim_model={self.dim_model} must be a multiple of 4")
        if self.vision_backbone not in BACKBONES:
            raise ValueError(
                f"unknown vision_backbone {self.vision_backbone!r}: choose one of {', '.join(BACKBONES)}"
            )
        if self.feedforward_activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown feedforward_activation {self.feedforward_activation!r}: "
                f"choose one of {', '.join(ACTIVATIONS)}"
            )
        for name in ("pre_norm", "use_vae", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("kl_weight", "lr_backbone", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "eps", "grad_clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    @property
    def tokens_per_camera(self) -> int:
        """Feature-map cells the backbone gives one frame: ceil(H/32) * ceil(W/32)."""
        height, width = self.image_size
        return math.ceil(height / BACKBONE_STRIDE) * math.ceil(width / BACKBONE_STRIDE)

    @property
    def encoder_seq_len(self) -> int:
        """Transformer encoder tokens: latent, state, then every camera's feature map."""
        return 2 + self.cameras * self.tokens_per_camera

    @property
    def vae_encoder_seq_len(self) -> int:
        """VAE encoder tokens: class token, state, then the action chunk (0 without the VAE)."""
        return 2 + self.chunk_size if self.use_vae else 0


# Config fields lerobot-train accepts, and the flag that sets each; the rest come from the dataset
# (cameras, image_size, state_dim, action_dim) or do not exist in LeRobot (gradient_checkpointing).
LEROBOT_FLAGS: dict[str, str] = {
    "chunk_size": "--policy.chunk_size",
    "n_action_steps": "--policy.n_action_steps",
    "vision_backbone": "--policy.vision_backbone",
    "dim_model": "--policy.dim_model",
    "n_heads": "--policy.n_heads",
    "dim_feedforward": "--policy.dim_feedforward",
    "feedforward_activation": "--policy.feedforward_activation",
    "pre_norm": "--policy.pre_norm",
    "n_encoder_layers": "--policy.n_encoder_layers",
    "n_decoder_layers": "--policy.n_decoder_layers",
    "use_vae": "--policy.use_vae",
    "latent_dim": "--policy.latent_dim",
    "n_vae_encoder_layers": "--policy.n_vae_encoder_layers",
    "dropout": "--policy.dropout",
    "kl_weight": "--policy.kl_weight",
    "lr": "--policy.optimizer_lr",
    "lr_backbone": "--policy.optimizer_lr_backbone",
    "weight_decay": "--policy.optimizer_weight_decay",
}
# Fixed by ACT's optimiser preset, which lerobot-train applies over any --optimizer.* flag.
PRESET_FIELDS = ("betas", "eps", "grad_clip_norm")


def lerobot_args(cfg: Config) -> list[str]:
    """``lerobot-train`` flags selecting ACT with ``cfg``'s settings (only those off the defaults).

    ``ValueError`` for an optimiser setting lerobot-train cannot take for ACT.
    """
    default = Config()
    for name in PRESET_FIELDS:
        if getattr(cfg, name) != getattr(default, name):
            raise ValueError(
                f"{name}={getattr(cfg, name)!r}: lerobot-train fixes it to {getattr(default, name)!r} for ACT"
            )
    args = ["--policy.type=act"]
    for name, flag in LEROBOT_FLAGS.items():
        value = getattr(cfg, name)
        if value != getattr(default, name):
            args.append(f"{flag}={flag_value(value)}")
    return args
