"""Big batches stay cheap: synthetic batches are drawn on the probe's device, and the soak draws only
new episode boundaries at each step, never the frames again (issue 21). What a step sees stays
what the real training sees: every step prepares (copies and normalises) the loader's batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from probes import catalogue, training
from probes.keys import ACTION, ACTION_IS_PAD, STATE, image_keys
from probes.policies import tensors
from probes.protocol import ModelSpec, ProbeRequest
from tests.cli import SMALL_ACT

CPU = torch.device("cpu")
SPEC = ModelSpec("act", 2, (48, 64), 6, 6, True, dict(SMALL_ACT))
SMOLVLA = ModelSpec("smolvla", 2, (48, 64), 6, 6, True, {"num_vlm_layers": 2})


@pytest.mark.parametrize("spec", [SPEC, SMOLVLA], ids=["act", "smolvla"])
def test_a_synthetic_batch_is_drawn_on_the_device_asked_for(spec: ModelSpec) -> None:
    cfg = catalogue.build_config(spec)
    module = catalogue.model_module(spec.policy)
    batch = module.synthetic_batch(cfg, 1000, device="meta")  # what a GPU would hold, at no cost
    tensors_ = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    assert set(tensors_) == {*image_keys(2), STATE, ACTION, ACTION_IS_PAD}
    assert all(v.is_meta for v in tensors_.values()), {k: v.device for k, v in tensors_.items()}
    assert batch[image_keys(2)[0]].shape == (1000, 3, 48, 64)
    assert batch[image_keys(2)[0]].dtype == torch.uint8
    assert batch[ACTION_IS_PAD].shape == (1000, cfg.chunk_size)


@pytest.mark.parametrize("spec", [SPEC, SMOLVLA], ids=["act", "smolvla"])
def test_a_synthetic_batch_is_drawn_where_its_generator_lives(spec: ModelSpec) -> None:
    cfg = catalogue.build_config(spec)
    module = catalogue.model_module(spec.policy)
    one = module.synthetic_batch(cfg, 8, torch.Generator(device=CPU).manual_seed(3))
    two = module.synthetic_batch(cfg, 8, torch.Generator(device=CPU).manual_seed(3))
    for key in (*image_keys(2), STATE, ACTION, ACTION_IS_PAD):
        assert one[key].device == CPU
        assert torch.equal(one[key], two[key])  # the seed fixes the batch


def test_every_policys_actions_carry_padded_tails_at_episode_ends() -> None:
    # SmolVLA's chunks reach past an episode's end as ACT's do (LeRobot pads both the same way);
    # before, its synthetic padding was all False, so the soak had nothing to vary for it.
    for spec in (SPEC, SMOLVLA):
        cfg = catalogue.build_config(spec)
        batch = catalogue.model_module(spec.policy).synthetic_batch(
            cfg, 256, torch.Generator().manual_seed(0)
        )
        pad = batch[ACTION_IS_PAD]
        assert 0 < int(pad.any(dim=1).sum()) < 256, spec.policy
        assert not pad[:, 0].any()
        assert torch.equal(pad, pad.cummax(dim=1).values)  # a tail: once padded, padded to the end


def test_redrawing_the_padding_keeps_every_other_tensor() -> None:
    cfg = catalogue.build_config(SPEC)
    generator = torch.Generator().manual_seed(0)
    batch = catalogue.model_module("act").synthetic_batch(cfg, 64, generator)
    again = tensors.redraw_padding(batch, generator)
    for key in (*image_keys(2), STATE, ACTION):
        assert again[key] is batch[key]  # the same tensor: nothing drawn, nothing copied
    assert again[ACTION_IS_PAD].shape == batch[ACTION_IS_PAD].shape
    assert again[ACTION_IS_PAD].dtype == torch.bool
    assert not torch.equal(again[ACTION_IS_PAD], batch[ACTION_IS_PAD])  # new episode boundaries
    assert batch[ACTION_IS_PAD] is not again[ACTION_IS_PAD]  # the caller's batch is left as it was


def test_a_batch_without_padding_flags_is_left_as_it_is() -> None:
    batch = {"observation.state": torch.zeros(2, 3)}
    again = tensors.redraw_padding(batch)
    assert again == batch and again is not batch


def test_on_the_cpu_the_loaders_batch_is_the_drawn_batch() -> None:
    batch = {"observation.state": torch.zeros(2, 3), "task": ["a", "b"]}
    assert training.loader_batch(batch, CPU) is batch


@pytest.mark.slow
def test_the_soak_draws_the_frames_once_and_prepares_them_at_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A soak of 6 steps at batch 4: one batch drawn, five new paddings, six prepared batches, the
    same frames in each (before, the whole batch was drawn again on the host at every step)."""
    module = catalogue.model_module("act")
    drawn: list[int] = []
    original_draw = module.synthetic_batch

    def counting_draw(cfg: Any, batch_size: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        drawn.append(batch_size)
        return original_draw(cfg, batch_size, *args, **kwargs)

    prepared: list[dict[str, Any]] = []
    original_prepare = training.prepare_batch

    def recording_prepare(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        prepared.append(batch)
        return original_prepare(batch, device)

    monkeypatch.setattr(module, "synthetic_batch", counting_draw)
    monkeypatch.setattr(training, "prepare_batch", recording_prepare)
    request = ProbeRequest(
        kind="batch", model=SPEC, device="cpu", precision="fp32", batch_size=4,
        memory_limit_bytes=4 * 1024**3, warmup_steps=1, measure_steps=5, vary_padding=True,
    )  # fmt: skip
    result = training.run_batch_probe(request, None)
    steps = result["warmup_steps"] + result["steps"]
    assert drawn == [4]  # the frames were drawn once
    assert len(prepared) == steps  # and prepared (copied, normalised) for every step
    frames = image_keys(2)[0]
    assert all(b[frames] is prepared[0][frames] for b in prepared)
    paddings = {tuple(b[ACTION_IS_PAD].flatten().tolist()) for b in prepared}
    assert len(paddings) > 1  # the episode boundaries varied from step to step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch sees none")
def test_on_cuda_a_batch_of_1000_is_drawn_on_the_device_and_handed_over_pinned() -> None:
    full = ModelSpec("act", 2, (480, 640), 6, 6, False)
    cfg = catalogue.build_config(full)
    device = torch.device("cuda", 0)
    generator = torch.Generator(device=device).manual_seed(0)
    drawn = catalogue.model_module("act").synthetic_batch(cfg, 1000, generator)
    assert all(v.is_cuda for v in drawn.values() if isinstance(v, torch.Tensor))
    host = training.loader_batch(drawn, device)
    for key in (*image_keys(2), STATE, ACTION, ACTION_IS_PAD):
        assert host[key].device == CPU and host[key].is_pinned(), key
        assert torch.equal(host[key], drawn[key].cpu())
    del drawn
    ready = training.prepare_batch(host, device)  # what every step does: copy, then normalise there
    frames = ready[image_keys(2)[0]]
    assert frames.is_cuda and frames.dtype == torch.float32 and frames.shape == (1000, 3, 480, 640)
    again = tensors.redraw_padding(host, generator)
    assert again[ACTION_IS_PAD].device == CPU and again[image_keys(2)[0]] is host[image_keys(2)[0]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch sees none")
def test_on_cuda_a_soak_probe_trains_on_the_pinned_batch() -> None:
    from autotune.run.probe_client import run_probe

    request = ProbeRequest(
        kind="batch", model=SPEC, device="cuda:0", precision="fp32", batch_size=8,
        memory_limit_bytes=4 * 1024**3, warmup_steps=1, measure_steps=5, vary_padding=True,
    )  # fmt: skip
    result = run_probe(request, timeout_s=300)
    assert result.status == "ok", result.message
    assert result.steps == 5 and result.peak_reserved_bytes > 0
