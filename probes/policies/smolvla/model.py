"""SmolVLA's model (VLAFlowMatching, the flow-matching loss), its synthetic batch and description."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.checkpoint import checkpoint

from probes.keys import (
    ACTION,
    ACTION_IS_PAD,
    LANGUAGE_MASK,
    LANGUAGE_TOKENS,
    STATE,
    TASK,
    is_image_key,
)
from probes.policies.common import count_params
from probes.policies.smolvla.config import Config, sequence_lengths, tokens_per_camera
from probes.policies.smolvla.layers import (
    Connector,
    DecoderLayer,
    Expert,
    TextModel,
    VisionTower,
    apply_rope,
    attention_mask_2d,
    eager_attention,
    resize_with_pad,
    rope_tables,
    sdpa_attention,
    time_embedding,
    tokenize,
)
from probes.policies.tensors import episode_padding, frames_state_actions
from probes.train_step import IMAGENET_MEAN, IMAGENET_STD


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
        keys = sorted(k for k in batch if is_image_key(k))
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
        if LANGUAGE_TOKENS in batch:
            tokens = batch[LANGUAGE_TOKENS].to(device)
            mask = batch[LANGUAGE_MASK].to(device=device, dtype=torch.bool)
            return tokens, mask
        if TASK not in batch:
            raise ValueError(f"batch has neither {LANGUAGE_TOKENS!r} nor {TASK!r}")
        tasks = batch[TASK]
        if isinstance(tasks, str):
            tasks = [tasks]
        batch_size = batch[STATE].shape[0]
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
        state = batch[STATE]
        if state.ndim > 2:
            state = state[:, -1]
        state = F.pad(state.float(), (0, cfg.max_state_dim - state.shape[-1]))
        actions = batch[ACTION].float()
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
        is_pad = batch.get(ACTION_IS_PAD)
        if is_pad is not None:
            losses = losses * (~is_pad.to(device=device, dtype=torch.bool))[..., None]
        return losses.mean()


# --------------------------------------------------------------------------------------------
# The policy-package contract (see probes.catalogue)
# --------------------------------------------------------------------------------------------


def synthetic_batch(
    cfg: Config,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """A batch with LeRobot's keys, shapes and dtypes (uint8 frames, float state/action), drawn on
    ``device`` (default: the generator's device, else torch's default). Its action chunks carry
    padded tails where a sample reaches past its episode's end, as LeRobot's delta timestamps
    give them (:func:`~probes.policies.tensors.episode_padding`)."""
    batch = frames_state_actions(cfg, batch_size, generator, device)
    batch[ACTION_IS_PAD] = episode_padding(cfg.chunk_size, batch_size, generator, device)
    batch[TASK] = ["pick up the cube and place it in the bin"] * batch_size
    return batch


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
        "total_params": count_params(model.parameters()),
        "trainable_params": count_params(p for p in model.parameters() if p.requires_grad),
        "component_params": {
            "vision": count_params(model.vision.parameters()),
            "connector": count_params(model.connector.parameters()),
            "text": count_params(model.text.parameters()),
            "lm_head": count_params(model.lm_head.parameters()),
            "expert": count_params(model.expert.parameters()),
            "projections": sum(count_params(m.parameters()) for m in projections),
        },
    }
