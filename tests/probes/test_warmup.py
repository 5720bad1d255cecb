"""A probe measures steps that carry the optimizer's state at every precision: fp16's gradient
scaler skips ``optimizer.step()`` while its scale calibrates, so AdamW's state (twice the trainable
weights) appears only steps later, and a probe that measured before it would overstate the
largest batch. Shown on the CPU with fp16 autocast and a CPU GradScaler, on the cut-down ACT."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from probes import catalogue
from probes.protocol import ModelSpec, ProbeRequest
from probes.train_step import TrainStep, prepare_batch
from tests.cli import SMALL_ACT

CPU = torch.device("cpu")
# One 32x32 camera: fp16 on a CPU takes about a second a step (2.4 s at 48x64), and the scaler
# skips the first five or six.
SPEC = ModelSpec("act", 1, (32, 32), 6, 6, True, dict(SMALL_ACT))


def small_act_step(precision: str) -> tuple[TrainStep, dict[str, Any]]:
    torch.manual_seed(0)
    cfg = catalogue.build_config(SPEC)
    module = catalogue.model_module("act")
    step = TrainStep(module.Model(cfg), cfg, CPU, precision)
    batch = prepare_batch(module.synthetic_batch(cfg, 2, torch.Generator().manual_seed(0)), CPU)
    return step, batch


@pytest.mark.slow
def test_fp16_skips_the_first_optimizer_steps_so_a_one_step_warm_up_never_held_adamws_state() -> None:
    step, batch = small_act_step("fp16")
    for _ in range(4):  # the old probe: 1 warm-up step and 3 measured
        step(batch)
    assert len(step.optimizer.state) == 0  # every one of them was skipped
    assert step.scaler.get_scale() < 2.0**16
    assert not step.optimizer_ready()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_a_batch_probe_measures_only_steps_that_hold_the_optimizers_state(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from probes.training import run_batch_probe

    held: list[int] = []  # parameters with optimizer state when each step began
    original = TrainStep.__call__

    def spy(self: TrainStep, batch: Any) -> float:
        held.append(len(self.optimizer.state))
        return original(self, batch)

    monkeypatch.setattr(TrainStep, "__call__", spy)
    request = ProbeRequest(
        kind="batch", model=SPEC, device="cpu", precision=precision, batch_size=2,
        memory_limit_bytes=4 * 1024**3, warmup_steps=1, measure_steps=3,
    )  # fmt: skip
    result = run_batch_probe(request, None)

    cfg = catalogue.build_config(SPEC)
    trainable = sum(1 for p in catalogue.model_module("act").Model(cfg).parameters() if p.requires_grad)
    measured = held[-request.measure_steps :]
    assert measured == [trainable] * request.measure_steps, held
    assert result["warmup_steps"] == len(held) - request.measure_steps >= 1
    assert result["memory_cap_bytes"] == request.memory_limit_bytes  # a CPU probe's cap: its budget
    assert 0 < result["warmup_peak_reserved_bytes"] <= result["peak_reserved_bytes"]
    if precision == "fp16":
        assert result["warmup_steps"] > 1  # the scaler skipped at least the first step


def test_the_warm_up_is_bounded_and_says_why_when_the_optimizer_never_steps() -> None:
    from probes.train_step import OptimizerNeverStepped, warm_up

    class NeverSteps:
        precision = "fp16"
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**-16)

        def optimizer_ready(self) -> bool:
            return False

    calls: list[int] = []
    with pytest.raises(OptimizerNeverStepped, match=r"never stepped in 5 warm-up steps at fp16.*scaler"):
        warm_up(NeverSteps(), calls.append, min_steps=1, max_steps=5)  # type: ignore[arg-type]
    assert calls == [0, 1, 2, 3, 4]


def test_the_warm_up_takes_at_least_the_steps_asked_for() -> None:
    from probes.train_step import warm_up

    class Ready:
        def optimizer_ready(self) -> bool:
            return True

    calls: list[int] = []
    assert warm_up(Ready(), calls.append, min_steps=2) == 2  # type: ignore[arg-type]
    assert calls == [0, 1]
