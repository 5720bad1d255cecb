"""Choosing who measures (--backend) and what happens when LeRobot's own build of a policy fails:
pure logic, the probe child replaced by a fake (the real child runs in tests/e2e/test_lerobot_backend.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.run import context, prepare
from autotune.run.config import RunConfig
from autotune.run.datasets import DatasetShape
from autotune.trainer.versions import Trainer
from probes import catalogue
from probes.protocol import ModelSpec, ProbeResult


@pytest.mark.parametrize(
    ("asked", "importable", "chosen"),
    [
        ("auto", True, "lerobot"),
        ("auto", False, "rebuilt"),
        ("rebuilt", True, "rebuilt"),
        ("lerobot", True, "lerobot"),
    ],
)
def test_auto_measures_with_lerobot_where_it_can_be_imported(monkeypatch, asked, importable, chosen) -> None:
    monkeypatch.setattr(catalogue, "lerobot_importable", lambda: importable)
    assert prepare.resolve_backend(asked) == chosen


def test_backend_lerobot_where_it_cannot_be_imported_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setattr(catalogue, "lerobot_importable", lambda: False)
    with pytest.raises(UserError, match="install autotune into your LeRobot environment"):
        prepare.resolve_backend("lerobot")


def test_the_rebuilt_backend_takes_only_the_policies_autotune_rebuilds() -> None:
    with pytest.raises(ValueError, match="--backend lerobot tunes any policy"):
        RunConfig(policy="diffusion", device="cpu", precision="fp32")
    assert (
        RunConfig(policy="diffusion", device="cpu", precision="fp32", backend="lerobot").policy == "diffusion"
    )
    with pytest.raises(ValueError, match="unknown backend"):
        RunConfig(policy="act", device="cpu", precision="fp32", backend="torch")


def test_the_estimate_is_used_with_the_rebuilt_models_only() -> None:
    assert RunConfig(policy="act", device="cpu", precision="fp32").uses_estimate
    assert not RunConfig(policy="act", device="cpu", precision="fp32", backend="lerobot").uses_estimate


def test_overrides_become_lerobot_train_flags_as_given() -> None:
    spec = ModelSpec(
        "diffusion", 2, (48, 64), 6, 6, overrides={"down_dims": "[32,64]", "use_amp": True, "x": None}
    )
    assert catalogue.backend_policy_args(spec) == [
        "--policy.type=diffusion",
        "--policy.down_dims=[32,64]",
        "--policy.use_amp=true",
        "--policy.x=null",
    ]


def _cfg(policy: str, **overrides) -> RunConfig:
    return RunConfig(
        policy=policy, device="cpu", precision="fp32", backend="lerobot", trainer=Trainer("0.6.1", "imported"),
        policy_overrides=overrides,
    )  # fmt: skip


DATA = DatasetShape(root=Path("/data"), repo_id="", kind="synthetic", cameras=2, image_size=(48, 64),
                    state_dim=6, action_dim=6)  # fmt: skip


def _describe(monkeypatch, result: ProbeResult) -> list:
    asked = []

    def fake(request, timeout_s):
        asked.append(request)
        return result

    monkeypatch.setattr(context, "run_probe", fake)
    return asked


def test_a_policy_that_needs_the_hub_falls_back_to_the_rebuild_where_there_is_one(monkeypatch) -> None:
    asked = _describe(
        monkeypatch,
        ProbeResult(
            "error",
            0,
            message="lerobot's smolvla needs the Hugging Face hub",
            description={"unbuildable": True},
        ),
    )
    cfg = context.check_in_lerobot(_cfg("smolvla", num_vlm_layers="2"), DATA)
    assert (
        asked[0].kind == "describe"
        and asked[0].model.backend == "lerobot"
        and asked[0].dataset_root == "/data"
    )
    assert cfg.backend == "rebuilt" and cfg.policy_overrides == {"num_vlm_layers": 2}  # typed for the rebuild


def test_a_policy_that_needs_the_hub_without_a_rebuild_stops(monkeypatch) -> None:
    _describe(
        monkeypatch,
        ProbeResult(
            "error", 0, message="lerobot's pi0 needs the Hugging Face hub", description={"unbuildable": True}
        ),
    )
    with pytest.raises(UserError, match="^lerobot's pi0 needs the Hugging Face hub$"):
        context.check_in_lerobot(_cfg("pi0"), DATA)


def test_what_lerobot_refuses_is_its_own_line(monkeypatch) -> None:
    _describe(
        monkeypatch, ProbeResult("error", 0, message="You must provide only one image among the inputs.")
    )
    with pytest.raises(UserError, match=r"^vqbet in lerobot 0.6.1: You must provide only one image"):
        context.check_in_lerobot(_cfg("vqbet"), DATA)


def test_a_policy_lerobot_builds_keeps_the_lerobot_backend(monkeypatch) -> None:
    _describe(monkeypatch, ProbeResult("ok", 0, description={"notes": [], "grad_checkpointing": True}))
    assert context.check_in_lerobot(_cfg("diffusion"), DATA).backend == "lerobot"


def test_checkpointing_asked_of_a_lerobot_policy_without_it_is_one_line(monkeypatch) -> None:
    _describe(monkeypatch, ProbeResult("ok", 0, description={"notes": [], "grad_checkpointing": False}))
    cfg = RunConfig(
        policy="act", device="cpu", precision="fp32", backend="lerobot", trainer=Trainer("0.6.1", "imported"),
        compare=True,
    )  # fmt: skip
    with pytest.raises(UserError, match="0.6.1's act has no gradient checkpointing"):
        context.check_in_lerobot(cfg, DATA)
