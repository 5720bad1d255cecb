"""The ACT rebuild matches LeRobot's shapes, parameter counts and loss, and trains on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from probes import catalogue
from probes.keys import image_keys
from probes.policies.act.config import Config, lerobot_args
from probes.policies.act.model import Model, build_backbone, describe, synthetic_batch
from probes.train_step import TrainStep, prepare_batch

# LeRobot's num_learnable_params (and its lr_backbone group), measured with lerobot 0.4.4 on
# torch 2.14.1 / torchvision 0.29.1: ACTPolicy(ACTConfig(pretrained_backbone_weights=None,
# input_features={observation.state: STATE (S,), observation.images.cam<i>: VISUAL (3, 480, 640)},
# output_features={action: ACTION (A,)}, **overrides)), counting parameters with requires_grad.
# Camera count does not change it: one backbone is shared by all cameras.
LEROBOT_COUNTS = [
    # (state_dim, action_dim, cameras, overrides, num_learnable_params, backbone group)
    (6, 6, 2, {}, 51_597_190, 11_166_912),
    (6, 6, 1, {}, 51_597_190, 11_166_912),
    (6, 6, 3, {}, 51_597_190, 11_166_912),
    (14, 14, 2, {}, 51_613_582, 11_166_912),
    (14, 14, 3, {}, 51_613_582, 11_166_912),
    (6, 6, 2, {"use_vae": False}, 34_223_942, 11_166_912),
    (6, 6, 2, {"pre_norm": True}, 51_599_238, 11_166_912),
    (6, 6, 2, {"chunk_size": 50, "n_action_steps": 50}, 51_571_590, 11_166_912),
    (
        7,
        7,
        2,
        {
            "dim_model": 256,
            "n_heads": 4,
            "dim_feedforward": 1024,
            "n_encoder_layers": 2,
            "n_vae_encoder_layers": 2,
            "n_decoder_layers": 2,
            "latent_dim": 16,
        },
        16_611_559,
        11_166_912,
    ),
]

SMALL_IMAGE = (64, 64)


def small_config(**overrides: object) -> Config:
    """LeRobot's default ACT on small frames, so a CPU step takes a fraction of a second."""
    return Config(image_size=SMALL_IMAGE, **overrides)


def device_batch(cfg: Config, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return prepare_batch(synthetic_batch(cfg, batch_size, generator), torch.device("cpu"))


@pytest.mark.parametrize(
    ("state_dim", "action_dim", "cameras", "overrides", "expected", "expected_backbone"), LEROBOT_COUNTS
)
def test_parameter_count_equals_lerobots(
    state_dim: int, action_dim: int, cameras: int, overrides: dict, expected: int, expected_backbone: int
) -> None:
    cfg = Config(cameras=cameras, state_dim=state_dim, action_dim=action_dim, **overrides)
    info = describe(cfg)
    assert info["total_params"] == expected
    assert info["trainable_params"] == expected
    assert info["backbone_params"] == expected_backbone
    parts = ("backbone_params", "transformer_params", "vae_encoder_params", "other_params")
    assert sum(info[p] for p in parts) == expected


def test_param_groups_put_the_backbone_alone_at_lr_backbone() -> None:
    cfg = Config(lr=3e-5, lr_backbone=7e-6)
    with torch.device("meta"):
        model = Model(cfg)
    rest, backbone = model.param_groups()
    assert backbone["lr"] == 7e-6
    assert "lr" not in rest  # takes the optimiser's lr
    assert sum(p.numel() for p in backbone["params"]) == 11_166_912
    grouped = [id(p) for g in (rest, backbone) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_backbone_batchnorm_is_frozen_buffers() -> None:
    with torch.device("meta"):
        model = Model(Config())
    frozen = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 20  # resnet18: bn1 plus two per basic block and one per downsample
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("image_size", "tokens"),
    [((480, 640), 300), ((481, 640), 320), ((720, 1280), 920), ((33, 65), 6), ((64, 96), 6)],
)
def test_tokens_per_camera_is_the_stride_32_grid_rounded_up(image_size: tuple[int, int], tokens: int) -> None:
    cfg = Config(image_size=image_size, cameras=3)
    info = describe(cfg)
    assert info["tokens_per_camera"] == tokens
    assert info["encoder_seq_len"] == 2 + 3 * tokens
    assert info["decoder_queries"] == 100
    assert info["vae_encoder_seq_len"] == 102


def test_backbone_feature_map_has_tokens_per_camera_cells() -> None:
    cfg = Config(image_size=(33, 65))
    backbone, width = build_backbone(cfg.vision_backbone)
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, *cfg.image_size))
    assert width == 512
    assert features.shape[1] == 512
    assert features.shape[2] * features.shape[3] == cfg.tokens_per_camera


def test_describe_is_json_and_carries_the_config() -> None:
    info = json.loads(json.dumps(describe(Config())))
    assert info["config"]["chunk_size"] == 100
    assert info["config"]["image_size"] == [480, 640]
    assert info["config"]["dim_feedforward"] == 3200


def test_synthetic_batch_has_lerobot_shapes_and_some_padded_tails() -> None:
    cfg = Config(image_size=SMALL_IMAGE, cameras=3, state_dim=14, action_dim=14)
    batch = synthetic_batch(cfg, 64, torch.Generator().manual_seed(0))
    assert sorted(k for k in batch if k.startswith("observation.images.")) == image_keys(3)
    for key in image_keys(3):
        assert batch[key].shape == (64, 3, *SMALL_IMAGE)
        assert batch[key].dtype == torch.uint8
    assert batch["observation.state"].shape == (64, 14)
    assert batch["observation.state"].dtype == torch.float32
    assert batch["action"].shape == (64, 100, 14)
    assert batch["action"].dtype == torch.float32
    pad = batch["action_is_pad"]
    assert pad.shape == (64, 100)
    assert pad.dtype == torch.bool
    padded = pad.any(dim=1)
    assert 0 < int(padded.sum()) < 64  # some samples reach past their episode's end, not all
    assert not pad[:, 0].any()  # the current frame's action is never padding
    # Padding is a tail: once padded, every later step is padded.
    assert torch.equal(pad, pad.cummax(dim=1).values)


def test_training_step_changes_parameters_but_not_frozen_batchnorm() -> None:
    torch.manual_seed(0)
    cfg = small_config(dim_model=64, n_heads=4, dim_feedforward=128)
    model = Model(cfg)
    step = TrainStep(model, cfg, torch.device("cpu"), "fp32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    loss = step(device_batch(cfg, 2))
    assert torch.isfinite(torch.tensor(loss))
    unchanged = {n for n, p in model.named_parameters() if torch.equal(p, before[n])}
    # The decoder's queries start as zeros and MultiheadAttention's biases as zeros, so its first
    # self-attention block outputs zeros on the first step and these get no gradient (in LeRobot
    # too). Every other parameter moves.
    assert unchanged == {
        "decoder.layers.0.self_attn.in_proj_weight",
        "decoder.layers.0.self_attn.out_proj.weight",
        "decoder.layers.0.norm1.weight",
    }
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert any(".bn1.running_mean" in n for n in buffers)


def test_loss_is_masked_l1_plus_weighted_kl() -> None:
    torch.manual_seed(0)
    cfg = small_config(dim_model=64, n_heads=4, dim_feedforward=128, dropout=0.0)
    model = Model(cfg).train()
    batch = device_batch(cfg, 2)
    torch.manual_seed(1)
    loss = model(batch)
    torch.manual_seed(1)
    mu, log_var = model.encode_latent(batch["observation.state"], batch["action"], batch["action_is_pad"])
    latent = mu + (log_var / 2).exp() * torch.randn_like(mu)
    predicted = model.predict_actions(latent, batch["observation.state"], model.camera_images(batch))
    error = (batch["action"] - predicted).abs() * ~batch["action_is_pad"].unsqueeze(-1)
    kld = (-0.5 * (1 + log_var - mu**2 - log_var.exp())).sum(-1).mean()
    torch.testing.assert_close(loss, error.mean() + 10.0 * kld)


def saved_activation_bytes(model: Model, batch: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps for backward during one forward pass, and the loss."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(batch)
    return total, loss


def test_gradient_checkpointing_gives_the_same_loss_and_gradients_with_less_saved() -> None:
    torch.manual_seed(0)
    cfg = small_config(dim_model=64, n_heads=4, dim_feedforward=128)  # dropout stays at 0.1
    model = Model(cfg).train()
    batch = device_batch(cfg, 2)
    layer_calls = 0

    def count(*_: object) -> None:
        nonlocal layer_calls
        layer_calls += 1

    # A module inside a checkpointed layer runs again when backward recomputes the layer.
    model.encoder.layers[0].linear1.register_forward_hook(count)
    results = {}
    for enabled in (False, True):
        model.set_gradient_checkpointing(enabled)
        model.zero_grad()
        layer_calls = 0
        torch.manual_seed(7)  # same dropout masks and latent noise in both runs
        saved, loss = saved_activation_bytes(model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[enabled] = (loss.detach(), grads, saved, layer_calls)
    loss_off, grads_off, saved_off, calls_off = results[False]
    loss_on, grads_on, saved_on, calls_on = results[True]
    torch.testing.assert_close(loss_on, loss_off, rtol=0, atol=0)
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, msg=name)
    assert calls_off == 1
    assert calls_on == 2  # recomputed in backward
    assert saved_on < saved_off / 3


def test_gradient_checkpointing_follows_config_and_switch() -> None:
    with torch.device("meta"):
        model = Model(Config(n_decoder_layers=2))
    assert model.gradient_checkpointing  # the Config default
    model.set_gradient_checkpointing(False)
    stacks = [model.encoder, model.decoder, model.vae_encoder]
    assert not any(s.gradient_checkpointing for s in stacks)
    model.set_gradient_checkpointing(True)
    assert all(s.gradient_checkpointing for s in stacks)


def test_forward_rejects_a_batch_with_the_wrong_camera_count() -> None:
    cfg = small_config(dim_model=64, n_heads=4, dim_feedforward=128)
    model = Model(Config(image_size=SMALL_IMAGE, cameras=3, dim_model=64, n_heads=4, dim_feedforward=128))
    with pytest.raises(ValueError, match="expected 3 camera keys, got 2"):
        model(device_batch(cfg, 1))


def test_config_defaults_are_lerobots() -> None:
    cfg = Config()
    assert (cfg.chunk_size, cfg.n_action_steps, cfg.dim_model, cfg.n_heads) == (100, 100, 512, 8)
    assert (cfg.dim_feedforward, cfg.feedforward_activation, cfg.pre_norm) == (3200, "relu", False)
    assert (cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.n_vae_encoder_layers) == (4, 1, 4)
    assert (cfg.use_vae, cfg.latent_dim, cfg.dropout, cfg.kl_weight) == (True, 32, 0.1, 10.0)
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay) == (1e-5, 1e-5, 1e-4)
    assert (cfg.betas, cfg.eps, cfg.grad_clip_norm) == ((0.9, 0.999), 1e-8, 10.0)
    assert catalogue.config_class("act") is Config
    assert catalogue.model_module("act").Model is Model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cameras": 0}, "cameras must be a positive integer, got 0"),
        ({"state_dim": -3}, "state_dim must be a positive integer, got -3"),
        ({"chunk_size": 2.5}, "chunk_size must be a positive integer, got 2.5"),
        ({"n_heads": True}, "n_heads must be a positive integer, got True"),
        ({"image_size": (480,)}, r"image_size must be \(H, W\), got \(480,\)"),
        ({"image_size": (480, 0)}, "image_size must be a positive integer, got 0"),
        ({"n_action_steps": 101}, "n_action_steps=101 exceeds chunk_size=100"),
        ({"dim_model": 500}, "dim_model=500 is not divisible by n_heads=8"),
        ({"dim_model": 6, "n_heads": 2}, "dim_model=6 must be a multiple of 4"),
        ({"feedforward_activation": "glu"}, "unknown feedforward_activation 'glu'"),
        ({"vision_backbone": "vit_b_16"}, "unknown vision_backbone 'vit_b_16'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"kl_weight": -1.0}, "kl_weight must be >= 0, got -1.0"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"betas": (0.9, 1.5)}, r"betas must be two numbers in \[0, 1\), got \(0.9, 1.5\)"),
        ({"use_vae": "yes"}, "use_vae must be a bool, got 'yes'"),
    ],
)
def test_config_rejects_bad_values_naming_them(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**overrides)


def test_config_accepts_lists_from_json() -> None:
    cfg = Config(image_size=[96, 128], betas=[0.9, 0.95])  # type: ignore[arg-type]
    assert cfg.image_size == (96, 128)
    assert cfg.betas == (0.9, 0.95)


def test_lerobot_args_name_the_policy_and_only_non_default_settings() -> None:
    assert lerobot_args(Config(cameras=3, image_size=(96, 128), state_dim=14)) == ["--policy.type=act"]
    args = lerobot_args(Config(chunk_size=50, n_action_steps=50, use_vae=False, lr=3e-5))
    assert args == [
        "--policy.type=act",
        "--policy.chunk_size=50",
        "--policy.n_action_steps=50",
        "--policy.use_vae=false",
        "--policy.optimizer_lr=3e-05",
    ]


def test_lerobot_args_refuse_optimiser_settings_lerobot_fixes() -> None:
    with pytest.raises(ValueError, match="betas=.*0.95"):
        lerobot_args(Config(betas=(0.9, 0.95)))


def test_dataset_needs_action_chunks_and_no_task() -> None:
    assert Config().chunk_size == 100
    assert catalogue.POLICIES["act"].reads_task is False
