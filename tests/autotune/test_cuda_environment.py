"""The GPU a run uses when NVML cannot tell, one line for a second MIG device, and the caching
allocator's settings (PYTORCH_CUDA_ALLOC_CONF) as a condition of the tuned answer. NVML is faked (or
made to fail); the tuner never imports torch: torch's view comes from the environment probe."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pynvml
import pytest

from autotune.errors import UserError
from autotune.machine import fingerprint as fp
from autotune.machine.devices import resolve_device, resolve_precision
from autotune.run.probe_client import child_environment
from tests.autotune.test_gpu_selection import MIG_UUID, FakeNvml, environment, machine

GiB = 1024**3


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in fp.ALLOC_CONF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(fp, "_warned", set())


def no_nvml_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


def failing_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)


@pytest.mark.parametrize("break_nvml", [no_nvml_module, failing_nvml])
def test_without_nvml_the_gpus_torch_sees_are_used_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, break_nvml
) -> None:
    break_nvml(monkeypatch)
    env = environment((9, 0))  # torch, in the environment probe, sees one Hopper GPU
    with caplog.at_level(logging.WARNING, logger="autotune"):
        assert resolve_device(None, env) == "cuda:0"  # not silently the CPU
        assert resolve_device("cuda:0", env) == "cuda:0"
        assert resolve_precision(None, "cuda:0", env) == "bf16"
        taken = fp.take("cuda:0", env)
    assert (taken.device_type, taken.gpu_name, taken.gpu_memory_bytes) == ("cuda", "GPU 0", 24 * GiB)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned  # said once
    assert "torch's view of CUDA device 0 (GPU 0)" in warned[0]


def test_without_nvml_the_default_budget_is_the_memory_torch_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.run.context import default_memory_limit

    no_nvml_module(monkeypatch)
    cfg = SimpleNamespace(gpu_index=0, device="cuda:0")
    assert default_memory_limit(cfg, environment((9, 0))) == 24 * GiB


def test_without_nvml_nor_a_gpu_in_torch_the_run_is_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    no_nvml_module(monkeypatch)
    assert resolve_device(None, environment()) == "cpu"
    with pytest.raises(UserError, match="no NVIDIA GPU 0"):
        resolve_device("cuda:0", environment())


def test_nvml_that_sees_no_gpu_is_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(machine()).install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_device(None, environment((9, 0))) == "cpu"  # CUDA_VISIBLE_DEVICES="" hides every GPU


@pytest.mark.parametrize("visible", [None, f"{MIG_UUID},MIG-ffffffff-0000-1111-2222-333344445555"])
def test_a_second_gpu_where_the_process_sees_one_mig_device_is_one_line(
    monkeypatch: pytest.MonkeyPatch, visible: str | None
) -> None:
    FakeNvml(machine()).install(monkeypatch)  # an A100 in MIG mode on the first bus, an L4 after it
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    env = environment((8, 0))  # torch sees one device: the first MIG slice
    with pytest.raises(UserError) as raised:
        resolve_device("cuda:1", env)
    text = str(raised.value)
    assert "\n" not in text
    assert "sees one MIG device" in text and "CUDA_VISIBLE_DEVICES=MIG-" in text and "--device cuda:0" in text
    assert resolve_device("cuda:0", env) == "cuda:0"


def test_two_gpus_beside_a_mig_device_are_chosen_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(machine()).install(monkeypatch)
    assert resolve_device("cuda:1", environment((8, 0), (8, 9))) == "cuda:1"  # torch sees both


def test_the_allocators_settings_are_in_the_fingerprint_and_a_change_re_tunes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeNvml(machine()).install(monkeypatch)
    env = environment((8, 0), (8, 9))
    before = fp.take("cuda:1", env).to_dict()
    assert before["cuda_alloc_conf"] == ""
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    now = fp.take("cuda:1", env)
    assert now.cuda_alloc_conf == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert now.changes_from(before) == ["cuda_alloc_conf"]
    assert fp.take("cpu", env).cuda_alloc_conf == ""  # it shapes CUDA memory only
    assert child_environment()["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # the probes'


def test_the_allocators_settings_are_a_condition_and_the_command_carries_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autotune.outputs.profile import Conditions, stale_reasons
    from autotune.trainer.command import Setting, command
    from autotune.trainer.versions import NEWEST_RELEASE, Trainer

    FakeNvml(machine()).install(monkeypatch)
    env = environment((8, 0), (8, 9))

    def conditions(conf: str) -> Conditions:
        return Conditions(
            "cuda:1", "bf16", True, 2, [480, 640], 6, 6, 24 * GiB, False, 0.1, "/data", "user",
            cuda_alloc_conf=conf,
        )  # fmt: skip

    tuned = {"fingerprint": fp.take("cuda:1", env).to_dict(), "conditions": conditions("").__dict__}
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    now = fp.take("cuda:1", env)
    reasons = stale_reasons(tuned, now, conditions(now.cuda_alloc_conf))
    assert "cuda_alloc_conf changed" in reasons

    def setting(device: str) -> Setting:
        return Setting(
            policy="act", policy_args=(), dataset_repo_id="me/data", dataset_root="/data", dataset_format="v3.0",
            device=device, precision="bf16", grad_checkpointing=False, batch_size=64, num_workers=4,
            prefetch_factor=2,
        )  # fmt: skip

    trainer = Trainer(NEWEST_RELEASE, "assumed")
    train = command(trainer, setting("cuda:1"))
    assert train.env["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"  # the trainer runs as probed
    assert "PYTORCH_ALLOC_CONF=expandable_segments:True" in train.text
    assert "PYTORCH_ALLOC_CONF" not in command(trainer, setting("cpu")).env
