"""ACT's model (backbone, VAE encoder, transformer, action head) and its loss, batches and description."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from probes.keys import ACTION, ACTION_IS_PAD, STATE, is_image_key
from probes.policies.act.config import Config
from probes.policies.act.layers import (
    Decoder,
    Encoder,
    run_checkpointed,
    sine_embedding_1d,
    sine_embedding_2d,
)
from probes.policies.common import count_params
from probes.policies.tensors import episode_padding, frames_state_actions

# The ResNet children LeRobot keeps: everything up to and including layer4 (no pooling, no fc).
BACKBONE_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


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
        keys = sorted(k for k in batch if is_image_key(k))
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
            features = run_checkpointed(self.backbone, self.gradient_checkpointing, image)  # (B, C, h, w)
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
        state = batch[STATE]
        actions = batch[ACTION]
        action_is_pad = batch[ACTION_IS_PAD]
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
# The policy-package contract (see probes.catalogue)


def synthetic_batch(
    cfg: Config,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """A batch of ACT's real shapes and dtypes, as LeRobot's loader yields it, drawn on ``device``
    (default: the generator's device, else torch's default).

    Samples come from the frames of an episode ``EPISODE_CHUNKS * chunk_size`` long (400 frames, an
    ALOHA episode, at the default), so about a quarter of them reach past the episode's end and
    carry a padded tail of actions (:func:`~probes.policies.tensors.redraw_padding` draws new ones).
    """
    batch = frames_state_actions(cfg, batch_size, generator, device)
    batch[ACTION_IS_PAD] = episode_padding(cfg.chunk_size, batch_size, generator, device)
    return batch


def describe(cfg: Config) -> dict[str, Any]:
    """Shapes and parameter counts of ACT for ``cfg``, from a model built on the meta device."""
    with torch.device("meta"):
        model = Model(cfg)
    named = list(model.named_parameters())

    def component(*prefixes: str) -> int:
        return count_params(p for n, p in named if n.startswith(prefixes))

    backbone = component("backbone.")
    vae = component("vae_encoder")
    transformer = component("encoder.", "decoder.")
    total = count_params(p for _, p in named)
    return {
        "policy": "act",
        "config": dataclasses.asdict(cfg),
        "tokens_per_camera": cfg.tokens_per_camera,
        "encoder_seq_len": cfg.encoder_seq_len,
        "decoder_queries": cfg.chunk_size,
        "vae_encoder_seq_len": cfg.vae_encoder_seq_len,
        "total_params": total,
        "trainable_params": count_params(p for _, p in named if p.requires_grad),
        "backbone_params": backbone,  # ResNet up to layer4 (LeRobot's lr_backbone group)
        "transformer_params": transformer,  # encoder and decoder layers
        "vae_encoder_params": vae,  # VAE encoder layers, its token projections and readout
        "other_params": total - backbone - vae - transformer,  # projections, embeddings, head
    }
