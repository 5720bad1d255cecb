"""SmolVLA's building blocks: SigLIP vision tower, connector, Llama layers, RoPE, attention, tokenizer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from probes.policies.smolvla.config import Config


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
