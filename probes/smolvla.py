"""LeRobot's SmolVLA (SmolVLM2-500M-Video-Instruct + action expert) rebuilt offline in plain torch.

LeRobot builds SmolVLA from the hub's SmolVLM2 config, processor and tokenizer, so it cannot be
built without a network. This module reproduces the same modules, shapes, freezing and training
forward with random weights. Facts were read from LeRobot 0.4.4 (``policies/smolvla``) and
transformers 4.57 (``models/smolvlm``, ``models/llama``):

- Vision: SigLIP as patched by SmolVLM (conv patch embedding with bias, learned position embedding
  over ``(image_size / patch)**2`` positions, pre-norm encoder layers with biased q/k/v/out and a
  tanh-GELU MLP, final ``post_layernorm``). transformers runs it with SDPA.
- Connector: pixel shuffle (space to depth) by ``scale_factor``, then one bias-free Linear.
- Text: the first ``num_vlm_layers`` Llama layers (RMSNorm, GQA attention and gated SiLU MLP, no
  biases), the token embedding, the final norm and an untied ``lm_head`` that the loss never uses.
- Expert: a Llama model at ``expert_width_multiplier`` of the text width, same heads and head_dim,
  MLP ``256 * ceil(4 * int(2 * width / 3) / 256)``. LeRobot drops its ``embed_tokens``; it keeps its
  final norm. In ``cross_attn`` mode every layer whose index is not a multiple of
  ``self_attn_every_n_layers`` reads the VLM's keys/values through k/v projections of shape
  ``(kv_heads * head_dim) -> (kv_heads * head_dim)``.
- Attention in the VLM/expert stack is LeRobot's own eager code: fp32 scores of the full
  ``B x heads x Lq x Lk`` matrix, masked with the fp32 minimum, fp32 softmax. RoPE is LeRobot's
  ``apply_rope`` with a fixed base of 10 000 (it ignores the checkpoint's ``rope_theta``).

Checked against LeRobot 0.4.4's own model at a small size with the weights copied across: the same
training loss and gradients, exactly in fp32 and under bf16 autocast with ``attention="eager"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.checkpoint import checkpoint

from probes.policy import image_keys
from probes.train_step import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DATASET_NEEDS",
    "Config",
    "Model",
    "describe",
    "lerobot_args",
    "sequence_lengths",
    "synthetic_batch",
    "tokenize",
    "tokens_per_camera",
]

logger = logging.getLogger(__name__)

DATASET_NEEDS: dict[str, Any] = {"chunk_size": 50, "task": True}

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
ATTENTION_MODES = ("cross_attn", "self_attn")

STATE_KEY = "observation.state"
ACTION_KEY = "action"
ACTION_PAD_KEY = "action_is_pad"
TOKENS_KEY = "observation.language.tokens"
TOKENS_MASK_KEY = "observation.language.attention_mask"
TASK_KEY = "task"


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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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


def tokenize(tasks: list[str], max_length: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic stand-in for SmolVLM2's tokenizer: one id per UTF-8 byte, hashed into the vocab.

    LeRobot appends a newline to each task and tokenizes on the fly; here every prompt is truncated
    or right-padded (id 0, mask False) to exactly ``max_length``, the worst case for memory.
    """
    ids = torch.zeros(len(tasks), max_length, dtype=torch.long)
    mask = torch.zeros(len(tasks), max_length, dtype=torch.bool)
    for row, task in enumerate(tasks):
        text = task if task.endswith("\n") else f"{task}\n"
        data = text.encode("utf-8")[:max_length]
        for col, byte in enumerate(data):
            ids[row, col] = (byte * 2654435761 + 97) % vocab_size
        mask[row, : len(data)] = True
    return ids, mask


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Llama RMSNorm: normalise in fp32, scale by a learned weight."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class GatedMLP(nn.Module):
    """Llama MLP: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Projections of one Llama attention block; the attention itself runs in the joint stack."""

    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int, kv_in: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q_proj = nn.Linear(width, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=False)


class DecoderLayer(nn.Module):
    """A Llama decoder layer (pre-norm attention and gated MLP, both residual)."""

    def __init__(self, cfg: Config, width: int, mlp: int, kv_in: int | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(width, cfg.text_rms_norm_eps)
        self.self_attn = Attention(
            width, cfg.text_heads, cfg.text_kv_heads, cfg.text_head_dim, kv_in or width
        )
        self.post_attention_layernorm = RMSNorm(width, cfg.text_rms_norm_eps)
        self.mlp = GatedMLP(width, mlp)

    def finish(self, residual: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, then the MLP block.

        The residual adds are in place, as LeRobot writes them: under autocast the stream keeps the
        projection's dtype instead of being promoted to fp32.
        """
        h = self.self_attn.o_proj(attn_out.to(self.self_attn.o_proj.weight.dtype))
        h += residual
        out = self.mlp(self.post_attention_layernorm(h))
        out += h
        return out


class VisionLayer(nn.Module):
    """A SigLIP encoder layer: pre-LayerNorm, biased multi-head attention, tanh-GELU MLP."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        width = cfg.vision_hidden
        self.heads = cfg.vision_heads
        self.layer_norm1 = nn.LayerNorm(width, eps=cfg.vision_layer_norm_eps)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.layer_norm2 = nn.LayerNorm(width, eps=cfg.vision_layer_norm_eps)
        self.fc1 = nn.Linear(width, cfg.vision_mlp)
        self.fc2 = nn.Linear(cfg.vision_mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        h = self.layer_norm1(x)
        q, k, v = (
            proj(h).view(b, n, self.heads, -1).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        # transformers runs the SmolVLM vision tower with SDPA by default.
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width)
        x = x + self.out_proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.layer_norm2(x)), approximate="tanh"))


class VisionTower(nn.Module):
    """SmolVLM's SigLIP: patch conv, learned positions, encoder layers, post LayerNorm."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.patch_size = cfg.vision_patch_size
        self.positions_per_side = cfg.vision_image_size // cfg.vision_patch_size
        self.patch_embedding = nn.Conv2d(
            3, cfg.vision_hidden, kernel_size=self.patch_size, stride=self.patch_size
        )
        self.position_embedding = nn.Embedding(self.positions_per_side**2, cfg.vision_hidden)
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.vision_layers))
        self.post_layernorm = nn.LayerNorm(cfg.vision_hidden, eps=cfg.vision_layer_norm_eps)

    def position_ids(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        """Patch grid mapped onto the learned position grid, bucketed as transformers' SmolVLM does.

        Fractional coordinates ``i / n * (1 - 1e-6)`` are bucketed against the boundaries
        ``k / side``; the shrink factor puts patch 1 in bucket 0, so rows and columns use
        positions 0, 0, 1, ..., side - 2 (the last learned position is never read).
        """
        side = self.positions_per_side
        boundaries = torch.arange(1, side, device=device, dtype=torch.float32) / side

        def buckets(n: int) -> torch.Tensor:
            fraction = torch.arange(n, device=device, dtype=torch.float32) / n * (1 - 1e-6)
            return torch.bucketize(fraction, boundaries, right=True)

        return (buckets(rows)[:, None] * side + buckets(cols)[None, :]).flatten()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_embedding(self.position_ids(rows, cols, x.device))
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)


class Connector(nn.Module):
    """Pixel shuffle (space to depth by ``scale``) and a bias-free projection to the text width."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.scale = cfg.scale_factor
        self.proj = nn.Linear(cfg.vision_hidden * cfg.scale_factor**2, cfg.text_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        side, s = math.isqrt(n), self.scale
        # Each output token gathers an s x s block of patches, ordered (block row, block col, channel).
        x = x.reshape(b, side // s, s, side // s, s, width).permute(0, 1, 3, 2, 4, 5)
        return self.proj(x.reshape(b, n // (s * s), s * s * width))


class TextModel(nn.Module):
    """The kept SmolLM2 layers with their token embedding and final norm."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.text_hidden)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, cfg.text_hidden, cfg.text_mlp) for _ in range(cfg.num_vlm_layers)
        )
        self.norm = RMSNorm(cfg.text_hidden, cfg.text_rms_norm_eps)


class Expert(nn.Module):
    """The action expert: narrower Llama layers and a final norm, no token embedding."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        vlm_kv = cfg.text_kv_heads * cfg.text_head_dim
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, cfg.expert_hidden, cfg.expert_mlp, vlm_kv if cfg.has_cross_kv(i) else None)
            for i in range(cfg.expert_layers)
        )
        self.norm = RMSNorm(cfg.expert_hidden, cfg.text_rms_norm_eps)


# --------------------------------------------------------------------------------------------
# Functional pieces of LeRobot's forward
# --------------------------------------------------------------------------------------------


def resize_with_pad(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize keeping the aspect ratio (bilinear), then pad on the left and top with zeros."""
    h, w = images.shape[-2:]
    ratio = max(w / width, h / height)
    new_h, new_w = int(h / ratio), int(w / ratio)
    if (new_h, new_w) != (h, w):
        images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return F.pad(images, (max(0, width - new_w), 0, max(0, height - new_h), 0), value=0.0)


def time_embedding(time: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding of flow-matching times (float64 where the device has it)."""
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * time[:, None].to(dtype)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def attention_mask_2d(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(B, L, L) boolean mask: query q sees key k if both are real tokens and k's block <= q's.

    ``blocks`` is 1 where a new block starts (state token, every action token): prefix tokens
    attend bidirectionally among themselves, the state sees the prefix, and action tokens see the
    prefix, the state and earlier actions.
    """
    block_id = torch.cumsum(blocks.long(), dim=1)
    causal = block_id[:, None, :] <= block_id[:, :, None]
    return causal & pad[:, None, :] & pad[:, :, None]


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (B, L, 1, head_dim / 2) for LeRobot's split-half rotary embedding."""
    half = head_dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=positions.device) * (2.0 / head_dim)
    angle = positions.float()[..., None] / (base**exponent)
    angle = angle[..., None, :]
    return torch.cos(angle), torch.sin(angle)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, heads, D) by position: first half and second half as the pair."""
    dtype = x.dtype
    first, second = x.float().chunk(2, dim=-1)
    out = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return out.to(dtype)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LeRobot's attention: KV heads repeated, fp32 (Lq x Lk) scores, fp32-min masking, fp32 softmax.

    q (B, Lq, H, D), k/v (B, Lk, KV, D), mask (B, Lq, Lk) -> (B, Lq, H * D). The op sequence is
    LeRobot's, so autocast treats it alike: the score matmul runs in the autocast dtype and is then
    copied to fp32 for masking and softmax.
    """
    b, lk, kv_heads, d = k.shape
    heads = q.shape[2]
    groups = heads // kv_heads
    k = k[:, :, :, None, :].expand(b, lk, kv_heads, groups, d).reshape(b, lk, heads, d)
    v = v[:, :, :, None, :].expand(b, lk, kv_heads, groups, d).reshape(b, lk, heads, d)
    scores = torch.matmul(q.float().transpose(1, 2), k.float().permute(0, 2, 3, 1))
    scores *= d**-0.5
    scores = scores.float()
    scores = torch.where(mask[:, None], scores, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.transpose(1, 2))
    return out.transpose(1, 2).reshape(b, q.shape[1], heads * d)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Same result through ``scaled_dot_product_attention``; no score matrix kept for backward.

    A query with no visible key (a padded language token) gets uniform attention, as LeRobot's
    fp32-min fill gives it, instead of the NaN a fully masked SDPA row would produce.
    """
    b, lq, heads, d = q.shape
    groups = heads // k.shape[2]
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.repeat_interleave(groups, dim=2).transpose(1, 2),
        v.repeat_interleave(groups, dim=2).transpose(1, 2),
        attn_mask=mask[:, None],
        scale=d**-0.5,
    )
    return out.transpose(1, 2).reshape(b, lq, heads * d)


# --------------------------------------------------------------------------------------------
# The policy
# --------------------------------------------------------------------------------------------


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    """transformers' default initialisation for the VLM and expert: N(0, 0.02), zero biases."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Conv2d | nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)


class Model(nn.Module):
    """SmolVLA's VLAFlowMatching: ``forward(batch)`` returns the flow-matching training loss."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg)
        self.connector = Connector(cfg)
        self.text = TextModel(cfg)
        self.lm_head = nn.Linear(cfg.text_hidden, cfg.vocab_size, bias=False)  # kept, unused
        self.expert = Expert(cfg)
        for part in (self.vision, self.connector, self.text, self.lm_head, self.expert):
            _init_weights(part)
        # LeRobot's projections are plain nn.Linear with torch's default initialisation.
        self.state_proj = nn.Linear(cfg.max_state_dim, cfg.text_hidden)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, cfg.expert_hidden)
        self.action_out_proj = nn.Linear(cfg.expert_hidden, cfg.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * cfg.expert_hidden, cfg.expert_hidden)
        self.action_time_mlp_out = nn.Linear(cfg.expert_hidden, cfg.expert_hidden)
        self._set_requires_grad()
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self._attend = eager_attention if cfg.attention == "eager" else sdpa_attention

    def _set_requires_grad(self) -> None:
        cfg = self.cfg
        if cfg.freeze_vision_encoder:
            self.vision.requires_grad_(False)
        if cfg.train_expert_only:
            for part in (self.vision, self.connector, self.text, self.lm_head):
                part.requires_grad_(False)
        else:
            # LeRobot also lists the last text layer and the final text norm here, but under
            # names ("text_model.model.layers.N.") that never occur in the module tree, so only
            # lm_head is frozen in practice; this reproduces what it does, not what it lists.
            self.lm_head.requires_grad_(False)
        self.state_proj.requires_grad_(cfg.train_state_proj)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each joint text/expert layer in backward instead of keeping its activations."""
        self.gradient_checkpointing = enabled

    def param_groups(self) -> list[dict[str, Any]]:
        """One AdamW group over the trainable parameters (LeRobot passes all; frozen get no grad)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    # -- inputs --------------------------------------------------------------------------------

    def camera_keys(self, batch: dict[str, Any]) -> list[str]:
        """The batch's camera keys (whatever the dataset names them), sorted; ``ValueError``
        unless there are ``cameras`` of them."""
        keys = sorted(k for k in batch if k.startswith("observation.images."))
        if len(keys) != self.cfg.cameras:
            raise ValueError(f"expected {self.cfg.cameras} camera keys, got {len(keys)}: {keys}")
        return keys

    def _camera_pixels(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        if key not in batch:
            raise ValueError(f"batch has no camera {key!r}; keys: {sorted(batch)}")
        images = batch[key]
        if images.ndim == 5:
            images = images[:, -1]
        # prepare_batch normalised with ImageNet statistics: back to [0, 1], as LeRobot's
        # SmolVLA sees frames (its VISUAL normalisation is the identity).
        mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)
        std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype)
        images = images * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
        images = resize_with_pad(images, *self.cfg.resize_imgs_with_padding)
        return images * 2.0 - 1.0  # SigLIP range

    def _language(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
        if TOKENS_KEY in batch:
            tokens = batch[TOKENS_KEY].to(device)
            mask = batch[TOKENS_MASK_KEY].to(device=device, dtype=torch.bool)
            return tokens, mask
        if TASK_KEY not in batch:
            raise ValueError(f"batch has neither {TOKENS_KEY!r} nor {TASK_KEY!r}")
        tasks = batch[TASK_KEY]
        if isinstance(tasks, str):
            tasks = [tasks]
        batch_size = batch[STATE_KEY].shape[0]
        if len(tasks) == 1:
            tasks = tasks * batch_size
        tokens, mask = tokenize(list(tasks), self.cfg.tokenizer_max_length, self.cfg.vocab_size)
        return tokens.to(device), mask.to(device)

    def embed_prefix(
        self, batch: dict[str, Any], state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image tokens of every camera, language tokens, one state token."""
        cfg = self.cfg
        scale = math.sqrt(cfg.text_hidden)
        embs, pads, blocks = [], [], []
        for key in self.camera_keys(batch):
            tokens = self.connector(self.vision(self._camera_pixels(batch, key)))
            tokens = tokens * torch.tensor(scale, dtype=tokens.dtype, device=tokens.device)
            b, n = tokens.shape[:2]
            embs.append(tokens)
            pads.append(torch.ones(b, n, dtype=torch.bool, device=tokens.device))
            blocks.append(torch.zeros(b, n, dtype=torch.bool, device=tokens.device))
        ids, lang_mask = self._language(batch, state.device)
        embs.append(self.text.embed_tokens(ids) * scale)
        pads.append(lang_mask)
        blocks.append(torch.zeros_like(lang_mask))
        state_token = self.state_proj(state)[:, None, :]
        b = state_token.shape[0]
        embs.append(state_token)
        pads.append(torch.ones(b, 1, dtype=torch.bool, device=state.device))
        blocks.append(torch.ones(b, 1, dtype=torch.bool, device=state.device))
        return torch.cat(embs, dim=1), torch.cat(pads, dim=1), torch.cat(blocks, dim=1)

    def embed_suffix(self, noisy_actions: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Action tokens fused with the sinusoidal time embedding by a two-layer SiLU MLP."""
        cfg = self.cfg
        actions = self.action_in_proj(noisy_actions)
        t = time_embedding(time, cfg.expert_hidden, cfg.min_period, cfg.max_period)
        t = t.to(actions.dtype)[:, None, :].expand_as(actions)
        fused = self.action_time_mlp_in(torch.cat([actions, t], dim=2))
        return self.action_time_mlp_out(F.silu(fused))

    # -- the joint transformer -----------------------------------------------------------------

    def _qkv(self, layer: DecoderLayer, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = layer.input_layernorm(hidden)
        h = h.to(layer.self_attn.q_proj.weight.dtype)
        shape = (*h.shape[:2], -1, layer.self_attn.head_dim)
        attn = layer.self_attn
        return attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)

    def _layer(
        self,
        index: int,
        prefix: torch.Tensor,
        suffix: torch.Tensor,
        mask: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        expert_cos: torch.Tensor,
        expert_sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """VLM layer ``index`` and its paired expert layer (joint self-attn or cross-attn)."""
        cfg = self.cfg
        vlm = self.text.layers[index]
        expert_index = cfg.expert_index(index)
        expert = None if expert_index is None else self.expert.layers[expert_index]
        n_prefix = prefix.shape[1]
        q, k, v = self._qkv(vlm, prefix)

        if not cfg.is_cross_layer(index):
            if expert is None:
                q = apply_rope(q, cos[:, :n_prefix], sin[:, :n_prefix])
                k = apply_rope(k, cos[:, :n_prefix], sin[:, :n_prefix])
                out = self._attend(q, k, v, mask[:, :n_prefix, :n_prefix])
                return vlm.finish(prefix, out), suffix
            eq, ek, ev = self._qkv(expert, suffix)
            q = apply_rope(torch.cat([q, eq], dim=1), cos, sin)
            k = apply_rope(torch.cat([k, ek], dim=1), cos, sin)
            out = self._attend(q, k, torch.cat([v, ev], dim=1), mask)
            return vlm.finish(prefix, out[:, :n_prefix]), expert.finish(suffix, out[:, n_prefix:])

        # Cross-attention layer: the prefix attends to itself; the expert's queries attend only to
        # the VLM's (rotated) keys and values, re-projected by the expert's own k/v.
        q = apply_rope(q, cos[:, :n_prefix], sin[:, :n_prefix])
        k = apply_rope(k, cos[:, :n_prefix], sin[:, :n_prefix])
        new_prefix = vlm.finish(prefix, self._attend(q, k, v, mask[:, :n_prefix, :n_prefix]))
        if expert is None:
            return new_prefix, suffix
        head_dim = expert.self_attn.head_dim
        eq = expert.self_attn.q_proj(
            expert.input_layernorm(suffix).to(expert.self_attn.q_proj.weight.dtype)
        ).view(*suffix.shape[:2], -1, head_dim)
        eq = apply_rope(eq, expert_cos, expert_sin)
        ek = expert.self_attn.k_proj(k.flatten(2).to(expert.self_attn.k_proj.weight.dtype))
        ev = expert.self_attn.v_proj(v.flatten(2).to(expert.self_attn.v_proj.weight.dtype))
        ek = ek.view(*ek.shape[:2], -1, head_dim)
        ev = ev.view(*ev.shape[:2], -1, head_dim)
        out = self._attend(eq, ek, ev, mask[:, n_prefix:, :n_prefix])
        return new_prefix, expert.finish(suffix, out)

    def forward(
        self,
        batch: dict[str, Any],
        *,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow-matching loss for a prepared batch; ``noise``/``time`` fix the random draws."""
        cfg = self.cfg
        state = batch[STATE_KEY]
        if state.ndim > 2:
            state = state[:, -1]
        state = F.pad(state.float(), (0, cfg.max_state_dim - state.shape[-1]))
        actions = batch[ACTION_KEY].float()
        actions = F.pad(actions, (0, cfg.max_action_dim - actions.shape[-1]))
        b, device = actions.shape[0], actions.device

        if noise is None:
            noise = torch.randn(actions.shape, dtype=torch.float32, device=device)
        if time is None:
            # Drawn on the CPU and copied over, as LeRobot does.
            beta = torch.distributions.Beta(1.5, 1.0).sample((b,))
            time = beta.to(device=device, dtype=torch.float32) * 0.999 + 0.001
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions

        prefix, prefix_pad, prefix_blocks = self.embed_prefix(batch, state)
        suffix = self.embed_suffix(x_t, time)
        suffix_flags = torch.ones(b, suffix.shape[1], dtype=torch.bool, device=device)
        pad = torch.cat([prefix_pad, suffix_flags], dim=1)
        mask = attention_mask_2d(pad, torch.cat([prefix_blocks, suffix_flags], dim=1))
        positions = torch.cumsum(pad.long(), dim=1) - 1
        expert_positions = positions[:, prefix.shape[1] :]
        expert_positions = expert_positions - expert_positions.min(dim=1, keepdim=True).values
        cos, sin = rope_tables(positions, cfg.text_head_dim, cfg.text_rope_theta)
        expert_cos, expert_sin = rope_tables(expert_positions, cfg.text_head_dim, cfg.text_rope_theta)

        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index in range(cfg.num_vlm_layers):
            args = (index, prefix, suffix, mask, cos, sin, expert_cos, expert_sin)
            if use_checkpoint:
                prefix, suffix = checkpoint(self._layer, *args, use_reentrant=False)
            else:
                prefix, suffix = self._layer(*args)
        prefix = self.text.norm(prefix)  # computed by LeRobot too; the loss does not read it
        suffix = self.expert.norm(suffix)[:, -cfg.chunk_size :]

        velocity = self.action_out_proj(suffix.float())
        losses = F.mse_loss(velocity.float(), target, reduction="none")
        # LeRobot 0.4.4 reads the pad flags under a misspelt key ("actions_id_pad") and so never
        # masks; the intended masking is applied here. The mean covers all max_action_dim columns.
        is_pad = batch.get(ACTION_PAD_KEY)
        if is_pad is not None:
            losses = losses * (~is_pad.to(device=device, dtype=torch.bool))[..., None]
        return losses.mean()


# --------------------------------------------------------------------------------------------
# Probe entry points
# --------------------------------------------------------------------------------------------


def synthetic_batch(cfg: Config, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Any]:
    """A CPU batch with LeRobot's keys, shapes and dtypes (uint8 frames, float state/action)."""
    h, w = cfg.image_size
    batch: dict[str, Any] = {
        key: torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8, generator=generator)
        for key in image_keys(cfg.cameras)
    }
    batch[STATE_KEY] = torch.randn(batch_size, cfg.state_dim, generator=generator)
    batch[ACTION_KEY] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=generator)
    batch[ACTION_PAD_KEY] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
    batch[TASK_KEY] = ["pick up the cube and place it in the bin"] * batch_size
    return batch


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: Config) -> dict[str, Any]:
    """Configuration, token counts and parameter counts (model built on the meta device)."""
    with torch.device("meta"):
        model = Model(cfg)
    projections = (
        model.state_proj,
        model.action_in_proj,
        model.action_out_proj,
        model.action_time_mlp_in,
        model.action_time_mlp_out,
    )
    lengths = sequence_lengths(cfg)
    return {
        "policy": "smolvla",
        "config": asdict(cfg),
        "tokens_per_camera": tokens_per_camera(cfg),
        "prefix_length": lengths["prefix"],
        "suffix_length": lengths["suffix"],
        "sequence_length": lengths["total"],
        "expert_hidden": cfg.expert_hidden,
        "expert_mlp": cfg.expert_mlp,
        "expert_layers": cfg.expert_layers,
        "total_params": _count(model),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "component_params": {
            "vision": _count(model.vision),
            "connector": _count(model.connector),
            "text": _count(model.text),
            "lm_head": _count(model.lm_head),
            "expert": _count(model.expert),
            "projections": sum(_count(m) for m in projections),
        },
    }


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


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def lerobot_args(cfg: Config) -> list[str]:
    """``lerobot-train`` flags selecting SmolVLA with every setting that differs from its defaults."""
    args = ["--policy.type=smolvla"]
    for name, (flag, default) in _LEROBOT_FIELDS.items():
        value = getattr(cfg, name)
        if value != default:
            args.append(f"--policy.{flag}={_flag_value(value)}")
    reference = Config()
    changed = [name for name in _VLM_FIELDS if getattr(cfg, name) != getattr(reference, name)]
    if changed:
        logger.warning(
            "SmolVLA's VLM shape comes from the hub checkpoint; no flag carries %s",
            ", ".join(changed),
        )
    return args
