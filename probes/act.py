"""LeRobot's ACT policy rebuilt in plain PyTorch at its real defaults, built offline with random weights.

The module tree and parameter names follow LeRobot's ``ACT`` model (``policy.model`` in LeRobot), so
the parameter count equals LeRobot's ``num_learnable_params`` and a LeRobot ACT state dict (less its
``model.`` prefix) loads into :class:`Model`. The loss is LeRobot's: the L1 error of the predicted
action chunk with padded steps zeroed, averaged over every element, plus ``kl_weight`` times the KL
divergence of the VAE posterior from a standard normal (summed over the latent, averaged over the
batch). Nothing here downloads weights: the ResNet backbone starts from random values, which costs
exactly the same memory and time as ImageNet weights.

Unlike LeRobot, the backbone and every transformer layer can run under activation checkpointing
(:meth:`Model.set_gradient_checkpointing`), which trades a second forward pass for memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops.misc import FrozenBatchNorm2d

from probes.policy import image_keys

IMAGE_PREFIX = "observation.images."
BACKBONE_STRIDE = 32  # every torchvision ResNet downsamples by 32 up to layer4
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
ACTIVATIONS = ("relu", "gelu")  # LeRobot also names "glu", which halves the width and cannot run
# The ResNet children LeRobot keeps: everything up to and including layer4 (no pooling, no fc).
BACKBONE_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

# What the data reader must yield: the action chunk length and whether the task string is read.
DATASET_NEEDS: dict[str, Any] = {"chunk_size": 100, "task": False}


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
            _check_positive_int(name, getattr(self, name))
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size!r}")
        for value in self.image_size:
            _check_positive_int("image_size", value)
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


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Positional embeddings


def sine_embedding_1d(positions: int, dim: int) -> Tensor:
    """(positions, dim) fixed sine/cosine table of "Attention Is All You Need", in float32.

    Channel ``c`` of position ``p`` is ``sin`` (even ``c``) or ``cos`` (odd ``c``) of
    ``p / 10000 ** (2 * (c // 2) / dim)``, computed in float64 as LeRobot does with NumPy.
    """
    pos = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
    channel = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(channel, 2, rounding_mode="floor") / dim)
    table = torch.where(channel.long() % 2 == 0, angle.sin(), angle.cos())
    return table.float()


def sine_embedding_2d(height: int, width: int, dim: int, device: torch.device) -> Tensor:
    """(1, dim, H, W) DETR-style 2D sine embedding: ``dim / 2`` channels for y, then x.

    Coordinates run 1..H (1..W) and are scaled so the last cell sits at (just under) 2*pi.
    """
    half = dim // 2
    eps, temperature = 1e-6, 10000.0
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    ys = ys / (ys[-1:] + eps) * (2 * math.pi)  # the sums in float32, as LeRobot rounds them
    xs = xs / (xs[-1:] + eps) * (2 * math.pi)
    channel = torch.arange(half, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / half)

    def interleave(angles: Tensor) -> Tensor:  # (N, half): sin on even channels, cos on odd ones
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    emb_y = interleave(ys[:, None] / freq)  # (H, half)
    emb_x = interleave(xs[:, None] / freq)  # (W, half)
    grid = torch.cat(
        (emb_y[:, None, :].expand(height, width, half), emb_x[None, :, :].expand(height, width, half)),
        dim=-1,
    )
    return grid.permute(2, 0, 1).unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# Transformer


def _activation(name: str) -> Any:
    return {"relu": F.relu, "gelu": F.gelu}[name]


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with dropout, residual and LayerNorm (post or pre).

    Tensors are sequence-first ``(S, B, D)``; the positional embedding is added to queries and
    keys, never to values.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        d = cfg.dim_model
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.activation = _activation(cfg.feedforward_activation)
        self.pre_norm = cfg.pre_norm

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            qk = _with_pos(h, pos)
            x = x + self.dropout1(self.self_attn(qk, qk, h, key_padding_mask=key_padding_mask)[0])
            return x + self.dropout2(self._feed_forward(self.norm2(x)))
        qk = _with_pos(x, pos)
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, key_padding_mask=key_padding_mask)[0]))
        return self.norm2(x + self.dropout2(self._feed_forward(x)))


class DecoderLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the encoder, then feed-forward."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        d = cfg.dim_model
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout)
        self.multihead_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.activation = _activation(cfg.feedforward_activation)
        self.pre_norm = cfg.pre_norm

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor, memory_pos: Tensor) -> Tensor:
        def self_block(h: Tensor) -> Tensor:
            qk = _with_pos(h, pos)
            return self.dropout1(self.self_attn(qk, qk, h)[0])

        def cross_block(h: Tensor) -> Tensor:
            out = self.multihead_attn(_with_pos(h, pos), _with_pos(memory, memory_pos), memory)[0]
            return self.dropout2(out)

        def ff_block(h: Tensor) -> Tensor:
            return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(h)))))

        if self.pre_norm:
            x = x + self_block(self.norm1(x))
            x = x + cross_block(self.norm2(x))
            return x + ff_block(self.norm3(x))
        x = self.norm1(x + self_block(x))
        x = self.norm2(x + cross_block(x))
        return self.norm3(x + ff_block(x))


def _run(module: nn.Module, checkpointing: bool, *args: Any) -> Any:
    """``module(*args)``, recomputed in backward instead of stored when checkpointing in training.

    The RNG state is saved and restored around the recomputation, so dropout masks, and with them
    the loss and gradients, are the same as without checkpointing.
    """
    if checkpointing and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


class Encoder(nn.Module):
    """A stack of encoder layers, with a final LayerNorm only in pre-norm mode (as in LeRobot)."""

    def __init__(self, cfg: Config, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(num_layers))
        self.norm: nn.Module = nn.LayerNorm(cfg.dim_model) if cfg.pre_norm else nn.Identity()
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = _run(layer, self.gradient_checkpointing, x, pos, key_padding_mask)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of decoder layers followed by a LayerNorm."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.norm = nn.LayerNorm(cfg.dim_model)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, memory: Tensor, pos: Tensor, memory_pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = _run(layer, self.gradient_checkpointing, x, memory, pos, memory_pos)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------
# The model


def build_backbone(name: str) -> tuple[nn.Sequential, int]:
    """A random-weight torchvision ResNet with frozen BatchNorm, cut after layer4, and its width."""
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
    children = OrderedDict((n, m) for n, m in resnet.named_children() if n in BACKBONE_CHILDREN)
    return nn.Sequential(children), resnet.fc.in_features


class Model(nn.Module):
    """ACT: ResNet features and the robot state, encoded with a VAE latent, decoded into a chunk.

    Submodule names match LeRobot's ``ACT`` module, so the parameter names (and count) do too.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim_model
        if cfg.use_vae:
            self.vae_encoder = Encoder(cfg, cfg.n_vae_encoder_layers)
            self.vae_encoder_cls_embed = nn.Embedding(1, d)
            self.vae_encoder_robot_state_input_proj = nn.Linear(cfg.state_dim, d)
            self.vae_encoder_action_input_proj = nn.Linear(cfg.action_dim, d)
            self.vae_encoder_latent_output_proj = nn.Linear(d, 2 * cfg.latent_dim)
            self.register_buffer(
                "vae_encoder_pos_enc", sine_embedding_1d(cfg.vae_encoder_seq_len, d).unsqueeze(0)
            )
        self.backbone, backbone_width = build_backbone(cfg.vision_backbone)
        self.encoder = Encoder(cfg, cfg.n_encoder_layers)
        self.decoder = Decoder(cfg)
        self.encoder_robot_state_input_proj = nn.Linear(cfg.state_dim, d)
        self.encoder_latent_input_proj = nn.Linear(cfg.latent_dim, d)
        self.encoder_img_feat_input_proj = nn.Conv2d(backbone_width, d, kernel_size=1)
        self.encoder_1d_feature_pos_embed = nn.Embedding(2, d)  # latent and state tokens
        self.decoder_pos_embed = nn.Embedding(cfg.chunk_size, d)  # the learned action queries
        self.action_head = nn.Linear(d, cfg.action_dim)
        # LeRobot (after the original ACT) re-initialises the encoder and decoder matrices.
        for p in (*self.encoder.parameters(), *self.decoder.parameters()):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Checkpoint (True) or store (False) the activations of the backbone and every layer."""
        self.gradient_checkpointing = bool(enabled)
        for module in self.modules():
            if isinstance(module, (Encoder, Decoder)):
                module.gradient_checkpointing = self.gradient_checkpointing

    def param_groups(self) -> list[dict[str, Any]]:
        """LeRobot's AdamW groups: everything but the backbone at ``lr``, the backbone at ``lr_backbone``."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        return [
            {"params": [p for n, p in named if not n.startswith("backbone.")]},
            {"params": [p for n, p in named if n.startswith("backbone.")], "lr": self.cfg.lr_backbone},
        ]

    def camera_images(self, batch: dict[str, Any]) -> list[Tensor]:
        """The batch's camera frames in sorted key order; ``ValueError`` unless there are ``cameras``."""
        keys = sorted(k for k in batch if k.startswith(IMAGE_PREFIX))
        if len(keys) != self.cfg.cameras:
            raise ValueError(f"expected {self.cfg.cameras} camera keys, got {len(keys)}: {keys}")
        return [batch[k] for k in keys]

    def encode_latent(self, state: Tensor, actions: Tensor, action_is_pad: Tensor) -> tuple[Tensor, Tensor]:
        """The VAE posterior's mean and log-variance, ``(B, latent_dim)`` each."""
        batch_size = state.shape[0]
        tokens = torch.cat(
            (
                self.vae_encoder_cls_embed.weight.expand(batch_size, 1, -1),
                self.vae_encoder_robot_state_input_proj(state).unsqueeze(1),
                self.vae_encoder_action_input_proj(actions),
            ),
            dim=1,
        )  # (B, 2 + chunk, D)
        # The class and state tokens are never padding; padded actions are masked out as keys.
        mask = torch.cat((action_is_pad.new_zeros(batch_size, 2), action_is_pad), dim=1)
        out = self.vae_encoder(tokens.transpose(0, 1), self.vae_encoder_pos_enc.transpose(0, 1), mask)
        params = self.vae_encoder_latent_output_proj(out[0])  # read out the class token
        return params[:, : self.cfg.latent_dim], params[:, self.cfg.latent_dim :]

    def predict_actions(self, latent: Tensor, state: Tensor, images: list[Tensor]) -> Tensor:
        """The ``(B, chunk_size, action_dim)`` action chunk for a latent, a state and the cameras."""
        tokens = [
            self.encoder_latent_input_proj(latent)[None],
            self.encoder_robot_state_input_proj(state)[None],
        ]
        pos = [self.encoder_1d_feature_pos_embed.weight.unsqueeze(1)]  # (2, 1, D)
        for image in images:
            features = _run(self.backbone, self.gradient_checkpointing, image)  # (B, C, h, w)
            _, _, height, width = features.shape
            cam_pos = sine_embedding_2d(height, width, self.cfg.dim_model, features.device)
            features = self.encoder_img_feat_input_proj(features)
            tokens.append(features.flatten(2).permute(2, 0, 1))  # (h*w, B, D), row-major cells
            pos.append(cam_pos.to(features.dtype).flatten(2).permute(2, 0, 1))  # (h*w, 1, D)
        encoder_tokens = torch.cat(tokens)
        encoder_pos = torch.cat(pos)
        memory = self.encoder(encoder_tokens, encoder_pos)
        batch_size = state.shape[0]
        queries = torch.zeros(
            (self.cfg.chunk_size, batch_size, self.cfg.dim_model),
            dtype=encoder_pos.dtype,
            device=encoder_pos.device,
        )
        out = self.decoder(queries, memory, self.decoder_pos_embed.weight.unsqueeze(1), encoder_pos)
        return self.action_head(out.transpose(0, 1))

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """LeRobot's ACT training loss for a device-resident, normalised batch.

        In eval mode (or without the VAE) the latent is zero and the loss is the L1 term alone.
        """
        images = self.camera_images(batch)
        state = batch["observation.state"]
        actions = batch["action"]
        action_is_pad = batch["action_is_pad"]
        if self.cfg.use_vae and self.training:
            mu, log_var = self.encode_latent(state, actions, action_is_pad)
            latent = mu + (log_var / 2).exp() * torch.randn_like(mu)  # reparameterisation
        else:
            mu = log_var = None
            latent = torch.zeros(state.shape[0], self.cfg.latent_dim, device=state.device)
        predicted = self.predict_actions(latent, state, images)
        # Padded steps count in the mean as zeros, exactly as LeRobot averages.
        l1 = (F.l1_loss(actions, predicted, reduction="none") * ~action_is_pad.unsqueeze(-1)).mean()
        if mu is None or log_var is None:
            return l1
        kld = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp())).sum(-1).mean()
        return l1 + self.cfg.kl_weight * kld


# ----------------------------------------------------------------------------------------------
# The policy-module contract


def synthetic_batch(
    cfg: Config, batch_size: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """A CPU batch of ACT's real shapes and dtypes, as LeRobot's loader yields it.

    Samples come from the frames of an episode ``4 * chunk_size`` long (400 frames, an ALOHA
    episode, at the default), so about a quarter of them reach past the episode's end and carry a
    padded tail of actions.
    """
    _check_positive_int("batch_size", batch_size)
    height, width = cfg.image_size
    batch: dict[str, Tensor] = {
        key: torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, generator=generator)
        for key in image_keys(cfg.cameras)
    }
    batch["observation.state"] = torch.randn(batch_size, cfg.state_dim, generator=generator)
    batch["action"] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=generator)
    episode_len = 4 * cfg.chunk_size
    frame = torch.randint(0, episode_len, (batch_size, 1), generator=generator)
    batch["action_is_pad"] = frame + torch.arange(cfg.chunk_size) >= episode_len
    return batch


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


def describe(cfg: Config) -> dict[str, Any]:
    """Shapes and parameter counts of ACT for ``cfg``, from a model built on the meta device."""
    with torch.device("meta"):
        model = Model(cfg)
    named = list(model.named_parameters())

    def component(*prefixes: str) -> int:
        return _count(p for n, p in named if n.startswith(prefixes))

    backbone = component("backbone.")
    vae = component("vae_encoder")
    transformer = component("encoder.", "decoder.")
    total = _count(p for _, p in named)
    return {
        "policy": "act",
        "config": dataclasses.asdict(cfg),
        "tokens_per_camera": cfg.tokens_per_camera,
        "encoder_seq_len": cfg.encoder_seq_len,
        "decoder_queries": cfg.chunk_size,
        "vae_encoder_seq_len": cfg.vae_encoder_seq_len,
        "total_params": total,
        "trainable_params": _count(p for _, p in named if p.requires_grad),
        "backbone_params": backbone,  # ResNet up to layer4 (LeRobot's lr_backbone group)
        "transformer_params": transformer,  # encoder and decoder layers
        "vae_encoder_params": vae,  # VAE encoder layers, its token projections and readout
        "other_params": total - backbone - vae - transformer,  # projections, embeddings, head
    }


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


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
            args.append(f"{flag}={_flag_value(value)}")
    return args
