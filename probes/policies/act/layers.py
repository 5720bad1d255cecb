"""ACT's transformer: sine positional embeddings, encoder and decoder layers and stacks, checkpointing."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from probes.policies.act.config import Config

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


def run_checkpointed(module: nn.Module, checkpointing: bool, *args: Any) -> Any:
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
            x = run_checkpointed(layer, self.gradient_checkpointing, x, pos, key_padding_mask)
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
            x = run_checkpointed(layer, self.gradient_checkpointing, x, memory, pos, memory_pos)
        return self.norm(x)
