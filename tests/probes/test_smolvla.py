"""SmolVLA probe: LeRobot's parameter counts, sequence shape, and a real training step on CPU."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from probes import catalogue
from probes.keys import image_keys
from probes.policies.smolvla.config import Config, lerobot_args, sequence_lengths
from probes.policies.smolvla.layers import tokenize
from probes.policies.smolvla.model import Model, describe, synthetic_batch
from probes.train_step import TrainStep, prepare_batch

# Reference counts: LeRobot 0.4.4's own SmolVLAPolicy (transformers 4.57.6, torch 2.14.1), built on
# the meta device with load_vlm_weights=False, AutoConfig.from_pretrained patched to return a
# SmolVLMConfig typed in from SmolVLM2-500M-Video-Instruct's published values (vision: hidden 768,
# 12 layers, 12 heads, MLP 3072, patch 16, image 512, LayerNorm eps 1e-6; text: llama, hidden 960,
# MLP 2560, 32 layers, 15/5 heads of 64, vocab 49280, no biases, untied embeddings; scale_factor 4)
# and AutoProcessor.from_pretrained patched to a stub tokenizer. Counted as lerobot_train.py logs
# them: sum(p.numel()) over policy.parameters(), with and without p.requires_grad.
# The same hand-built configuration at a small size, with weights copied across, gave LeRobot's
# training loss bit for bit (cross_attn and self_attn, eager and sdpa).
LEROBOT_TOTAL_PARAMS = 450_046_176
LEROBOT_COUNTS = {
    # overrides: (num_total_params, num_learnable_params)
    (): (LEROBOT_TOTAL_PARAMS, 99_880_992),
    (("train_expert_only", False),): (LEROBOT_TOTAL_PARAMS, 316_304_352),
    (("train_expert_only", False), ("freeze_vision_encoder", False)): (
        LEROBOT_TOTAL_PARAMS,
        402_737_376,
    ),
    (("train_state_proj", False),): (LEROBOT_TOTAL_PARAMS, 99_849_312),
    (("attention_mode", "self_attn"),): (452_094_176, 101_928_992),
    (("num_vlm_layers", 8),): (322_265_056, 50_758_432),
}

SMALL = dict(
    cameras=2,
    image_size=(48, 64),
    state_dim=6,
    action_dim=5,
    resize_imgs_with_padding=(64, 64),
    tokenizer_max_length=16,
    vision_hidden=64,
    vision_layers=2,
    vision_heads=2,
    vision_mlp=128,
    vision_patch_size=8,
    vision_image_size=64,
    scale_factor=2,
    text_layers=4,
    num_vlm_layers=2,
    text_hidden=64,
    text_mlp=128,
    text_heads=4,
    text_kv_heads=2,
    text_head_dim=16,
    vocab_size=1000,
)

CPU = torch.device("cpu")


def small_config(**overrides) -> Config:
    return Config(**{**SMALL, **overrides})


def prepared_batch(cfg: Config, batch_size: int = 3) -> dict:
    batch = synthetic_batch(cfg, batch_size, torch.Generator().manual_seed(0))
    batch["task"] = ["pick", "place the red cube in the bin", "open the drawer"][:batch_size]
    batch["action_is_pad"][-1, -10:] = True
    return prepare_batch(batch, CPU)


def fixed_draws(cfg: Config, batch_size: int = 3) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "noise": torch.randn(batch_size, cfg.chunk_size, cfg.max_action_dim, generator=g),
        "time": torch.rand(batch_size, generator=g) * 0.9 + 0.05,
    }


def loss_and_grads(model: Model, batch: dict, draws: dict) -> tuple[float, dict]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(batch, **draws)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("overrides", list(LEROBOT_COUNTS), ids=lambda o: str(dict(o)) or "default")
def test_full_size_parameter_counts_equal_lerobots(overrides):
    info = describe(Config(**dict(overrides)))
    assert (info["total_params"], info["trainable_params"]) == LEROBOT_COUNTS[overrides]


def test_full_size_components_add_up_to_the_total():
    info = describe(Config())
    parts = info["component_params"]
    assert parts == {
        "vision": 86_433_024,
        "connector": 11_796_480,
        "text": 204_626_880,
        "lm_head": 47_308_800,
        "expert": 98_245_840,
        "projections": 1_635_152,
    }
    assert sum(parts.values()) == info["total_params"]
    assert info["trainable_params"] == parts["expert"] + parts["projections"]
    assert (info["expert_hidden"], info["expert_mlp"], info["expert_layers"]) == (720, 2048, 16)
    json.dumps(info)


def test_two_cameras_give_64_tokens_each_and_227_in_all():
    info = describe(Config(cameras=2))
    assert info["tokens_per_camera"] == 64
    assert (info["prefix_length"], info["suffix_length"]) == (177, 50)
    assert info["sequence_length"] == 227
    assert sequence_lengths(Config(cameras=3))["total"] == 227 + 64


def test_cross_attention_layers_read_vlm_keys_through_320_wide_projections():
    with torch.device("meta"):
        model = Model(Config())
    shapes = [tuple(layer.self_attn.k_proj.weight.shape) for layer in model.expert.layers]
    assert shapes == [(320, 720), (320, 320)] * 8
    assert model.lm_head.weight.shape == (49280, 960)
    assert model.vision.position_embedding.weight.shape == (1024, 768)


def test_training_step_updates_trainable_params_only():
    cfg = small_config()
    torch.manual_seed(0)
    model = Model(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = TrainStep(model, cfg, CPU, "fp32")
    loss = step(prepared_batch(cfg))
    assert math.isfinite(loss)
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == param.requires_grad, name
    assert not any(p.requires_grad for p in model.text.parameters())
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert all(p.requires_grad for p in model.expert.parameters())


def test_state_projection_learns_through_the_frozen_text_layers():
    cfg = small_config()
    model = Model(cfg)
    _, grads = loss_and_grads(model, prepared_batch(cfg), fixed_draws(cfg))
    assert grads["state_proj.weight"].abs().sum() > 0
    assert not any(name.startswith(("text.", "vision.", "connector.")) for name in grads)


def test_unfreezing_the_vlm_trains_it_except_lm_head():
    cfg = small_config(train_expert_only=False, freeze_vision_encoder=False)
    model = Model(cfg)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["lm_head.weight"]
    loss, grads = loss_and_grads(model, prepared_batch(cfg), fixed_draws(cfg))
    assert math.isfinite(loss)
    assert "vision.patch_embedding.weight" in grads


def test_gradient_checkpointing_keeps_loss_and_grads():
    cfg = small_config(gradient_checkpointing=False)
    torch.manual_seed(0)
    model = Model(cfg)
    batch, draws = prepared_batch(cfg), fixed_draws(cfg)
    plain_loss, plain_grads = loss_and_grads(model, batch, draws)
    model.set_gradient_checkpointing(True)
    ckpt_loss, ckpt_grads = loss_and_grads(model, batch, draws)
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("mode", ["cross_attn", "self_attn"])
def test_sdpa_attention_matches_eager(mode):
    eager_cfg = small_config(attention="eager", attention_mode=mode)
    sdpa_cfg = small_config(attention="sdpa", attention_mode=mode)
    torch.manual_seed(0)
    eager = Model(eager_cfg)
    sdpa = Model(sdpa_cfg)
    sdpa.load_state_dict(eager.state_dict())
    batch, draws = prepared_batch(eager_cfg), fixed_draws(eager_cfg)
    eager_loss, eager_grads = loss_and_grads(eager, batch, draws)
    sdpa_loss, sdpa_grads = loss_and_grads(sdpa, batch, draws)
    assert math.isfinite(eager_loss)
    assert sdpa_loss == pytest.approx(eager_loss, rel=1e-5)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(sdpa_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_language_tokens_in_the_batch_replace_the_task_strings():
    cfg = small_config()
    model = Model(cfg)
    batch, draws = prepared_batch(cfg), fixed_draws(cfg)
    with_tasks, _ = loss_and_grads(model, batch, draws)
    tokens, mask = tokenize(batch["task"], cfg.tokenizer_max_length, cfg.vocab_size)
    with_tokens = {k: v for k, v in batch.items() if k != "task"}
    with_tokens["observation.language.tokens"] = tokens
    with_tokens["observation.language.attention_mask"] = mask
    from_tokens, _ = loss_and_grads(model, with_tokens, draws)
    assert from_tokens == pytest.approx(with_tasks, rel=1e-6)


def test_padded_action_steps_do_not_count_in_the_loss():
    cfg = small_config()
    model = Model(cfg)
    batch, draws = prepared_batch(cfg), fixed_draws(cfg)
    batch["action_is_pad"] = torch.ones_like(batch["action_is_pad"])
    loss, _ = loss_and_grads(model, batch, draws)
    assert loss == 0.0


def test_tokenizer_stand_in_is_deterministic_and_always_full_length():
    ids, mask = tokenize(["pick", "x" * 100], max_length=48, vocab_size=49280)
    again, _ = tokenize(["pick", "x" * 100], max_length=48, vocab_size=49280)
    assert ids.shape == mask.shape == (2, 48)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert torch.equal(ids, again)
    assert mask[0].sum() == len("pick\n") and mask[1].all()
    assert int(ids.max()) < 49280


def test_synthetic_batch_has_lerobot_keys_shapes_and_dtypes():
    cfg = small_config(cameras=3)
    batch = synthetic_batch(cfg, 2)
    for key in image_keys(3):
        assert batch[key].shape == (2, 3, 48, 64) and batch[key].dtype == torch.uint8
    assert batch["observation.state"].shape == (2, 6)
    assert batch["action"].shape == (2, 50, 5)
    assert batch["action_is_pad"].shape == (2, 50) and batch["action_is_pad"].dtype == torch.bool
    assert len(batch["task"]) == 2 and all(isinstance(t, str) for t in batch["task"])
    assert Config().chunk_size == 50
    assert catalogue.POLICIES["smolvla"].reads_task is True


def test_lerobot_args_name_only_changed_settings():
    assert lerobot_args(Config()) == ["--policy.type=smolvla"]
    args = lerobot_args(Config(train_expert_only=False, lr=3e-4, resize_imgs_with_padding=(256, 256)))
    assert args == [
        "--policy.type=smolvla",
        "--policy.resize_imgs_with_padding=[256,256]",
        "--policy.train_expert_only=false",
        "--policy.optimizer_lr=0.0003",
    ]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"attention": "flash"}, "flash"),
        ({"attention_mode": "both"}, "both"),
        ({"cameras": 0}, "cameras"),
        ({"state_dim": 40}, "state_dim"),
        ({"n_action_steps": 60}, "n_action_steps"),
        ({"resize_imgs_with_padding": (512, 384)}, "resize_imgs_with_padding"),
        ({"resize_imgs_with_padding": (520, 520)}, "520"),
        ({"num_vlm_layers": 40}, "num_vlm_layers"),
        ({"num_expert_layers": 5}, "num_expert_layers"),
        ({"num_expert_layers": 8}, "num_expert_layers"),
        ({"text_kv_heads": 4}, "text_kv_heads"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_config_rejects_bad_values_by_name(overrides, named):
    with pytest.raises(ValueError, match=named):
        Config(**overrides)


def test_config_accepts_lists_for_tuple_fields():
    cfg = Config(image_size=[240, 320], betas=[0.9, 0.99])
    assert cfg.image_size == (240, 320) and cfg.betas == (0.9, 0.99)
    assert copy.deepcopy(cfg) == cfg


def test_cameras_are_read_under_the_datasets_own_names():
    cfg = small_config()
    model = Model(cfg)
    batch, draws = prepared_batch(cfg), fixed_draws(cfg)
    reference, _ = loss_and_grads(model, batch, draws)
    names = {
        "observation.images.cam0": "observation.images.front",
        "observation.images.cam1": "observation.images.wrist",
    }
    renamed = {names.get(k, k): v for k, v in batch.items()}
    loss, _ = loss_and_grads(model, renamed, draws)
    assert loss == pytest.approx(reference, rel=1e-6)
    del renamed["observation.images.wrist"]
    with pytest.raises(ValueError, match="expected 2 camera keys"):
        loss_and_grads(model, renamed, draws)
