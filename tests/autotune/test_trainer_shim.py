"""``autotune verify`` measures lerobot-train as the probes measure themselves: the peak after the
first optimizer step, the warm-up's (cuDNN's algorithm search in step 1) apart, in the verdict and in
verify.csv. The trainer is a fake with a fake CUDA allocator (no GPU here), run under the real shim
in its own interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from autotune.outputs.profile import Profile
from autotune.trainer.verify import SHIM, TrainerRun, judge

MiB = 1024**2

# A training script as lerobot-train 0.6 runs on CUDA: it resets the allocator's peak at the start of
# every step; step 1 takes 600 MiB of cuDNN benchmark scratch beside 300 MiB of weights and optimizer
# state, and the caching allocator keeps that scratch cached; later steps need 200 MiB.
FAKE_TRAINER = """
import sys, types

MiB = 2**20
hooks = []
memory = {"allocated": 0, "reserved": 0, "peak_reserved": 0, "peak_allocated": 0}

def use(allocated):
    memory["allocated"] = allocated
    memory["reserved"] = max(memory["reserved"], allocated)
    memory["peak_reserved"] = max(memory["peak_reserved"], memory["reserved"])
    memory["peak_allocated"] = max(memory["peak_allocated"], allocated)

def reset_peak_memory_stats(device=None):
    memory["peak_reserved"], memory["peak_allocated"] = memory["reserved"], memory["allocated"]

def empty_cache():
    memory["reserved"] = memory["allocated"]

cuda = types.SimpleNamespace(
    is_available=lambda: True,
    max_memory_reserved=lambda device=None: memory["peak_reserved"],
    max_memory_allocated=lambda device=None: memory["peak_allocated"],
    reset_peak_memory_stats=reset_peak_memory_stats,
    empty_cache=empty_cache,
)
optimizer = types.SimpleNamespace(register_optimizer_step_post_hook=hooks.append)
torch = types.ModuleType("torch")
torch.cuda, torch.optim = cuda, types.SimpleNamespace(optimizer=optimizer)
sys.modules["torch"] = torch

def main():
    import torch  # the trainer's own calls go through the module, as LeRobot's do
    for step in range(5):
        torch.cuda.reset_peak_memory_stats()
        use(300 * MiB + (600 * MiB if step == 0 else 200 * MiB))  # forward and backward
        use(300 * MiB)  # what backward freed goes into the allocator's cache
        for hook in hooks:  # optimizer.step() done
            hook(None, (), {})
    return 0
"""


def test_the_shims_peak_leaves_the_first_steps_cudnn_scratch_to_the_warm_up(tmp_path: Path) -> None:
    (tmp_path / "faketrain.py").write_text(textwrap.dedent(FAKE_TRAINER))
    shim = tmp_path / "shim" / SHIM.name  # run from a copy, as verify does
    shim.parent.mkdir()
    shim.write_text(SHIM.read_text())
    result = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(shim), str(result), "faketrain"],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True, timeout=60,
    )  # fmt: skip
    measured = json.loads(result.read_text())
    assert measured["warmup_peak_bytes"] == 900 * MiB  # weights and state, and the algorithm search
    assert measured["cuda_peak_reserved_bytes"] == 500 * MiB  # the steady steps, as the probes measure
    assert measured["warmed_up"] is True


def run(peak: int, warmup: int) -> TrainerRun:
    return TrainerRun(
        exit_code=0, timed_out=False, last_line="", learnable_params=10, updt_s=0.1, data_s=0.0,
        steps_timed=5, peak_bytes=peak, workers_pss_bytes=0, wall_s=1.0, warmup_peak_bytes=warmup,
    )  # fmt: skip


def real_profile(**changes: object) -> Profile:
    """The tests' real CPU profile (data/act-profile.json) with ``changes``; ``conditions`` merge."""
    data = json.loads((Path(__file__).parent / "data" / "act-profile.json").read_text())
    conditions = {**data["conditions"], **changes.pop("conditions", {})}  # type: ignore[dict-item]
    return Profile.from_dict({**data, **changes, "conditions": conditions})


PROFILE = real_profile(
    lerobot_version="0.6.1",
    conditions={"memory_limit_bytes": 1024 * MiB, "headroom": 0.1},
    budget_bytes=1000 * MiB,
    trainable_params=10,
    batch_size=10,
    samples_per_s=100.0,
)


def test_the_verdict_prints_the_warm_up_peak_apart_and_judges_the_steady_one() -> None:
    verdict = judge(PROFILE, run(peak=500 * MiB, warmup=950 * MiB))  # the warm-up alone is over 900
    assert verdict.status == "verified", verdict.text
    assert "peak 500.00 MiB of" in verdict.text and "warm-up peak 950.00 MiB" in verdict.text
    over = judge(PROFILE, run(peak=950 * MiB, warmup=990 * MiB))
    assert over.status == "differs" and "warm-up peak 990.00 MiB" in over.text


def test_verify_csv_and_the_profile_have_the_warm_up_peak_beside_the_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from autotune.outputs.results import VERIFY_COLUMNS
    from autotune.trainer import verify

    assert VERIFY_COLUMNS.index("warmup_peak_bytes") == VERIFY_COLUMNS.index("peak_bytes") + 1
    profile = real_profile(
        lerobot_version="0.6.1", budget_bytes=1000 * MiB, trainable_params=10, batch_size=10,
        samples_per_s=100.0, policy="act", run_id="r0", precision="bf16", grad_checkpointing=True,
        fingerprint={"gpu_name": "H200"}, peak_reserved_bytes=480 * MiB, updt_s=0.1, data_s=0.0,
        conditions={"memory_limit_bytes": 1024 * MiB, "headroom": 0.1, "device": "cuda:0", "cameras": 2,
                    "image_size": [480, 640]},
    )  # fmt: skip
    rewritten: list[dict] = []
    monkeypatch.setattr(verify, "rewrite_profile", lambda results, policy, changes: rewritten.append(changes))
    trained = run(peak=500 * MiB, warmup=950 * MiB)
    verify.record(tmp_path, profile, SimpleNamespace(version="0.6.1"), trained, judge(profile, trained))
    row = pd.read_csv(tmp_path / "verify.csv").iloc[-1]
    assert row["warmup_peak_bytes"] == 950 * MiB and row["peak_bytes"] == 500 * MiB
    assert rewritten[0]["verification"]["warmup_peak_bytes"] == 950 * MiB
