"""``autotune verify``: run the profile's command in the real lerobot-train and compare with the profile.

The command runs for a few steps as an isolated child (its own process group, killed at the
timeout), without pushing to the hub, logging to wandb or saving checkpoints, under
:mod:`autotune.trainer.shim`, which measures its memory the way the probes do. Its log gives the
parameter count and, per step, ``updt_s`` and ``data_s``; the first step (which starts the
DataLoader's workers) is set apart. The verdict goes to stdout, ``results/verify.csv`` and the
profile's ``verification`` field; a profile is never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autotune.errors import UserError
from autotune.machine import fingerprint as fp
from autotune.machine.devices import probe_environment
from autotune.outputs.profile import Profile, profile_path, read_profile, rewrite_profile
from autotune.outputs.results import ResultsWriter, profile_run_key
from autotune.run.context import new_run_id
from autotune.trainer.versions import Trainer, find_trainer
from autotune.units import format_bytes

log = logging.getLogger(__name__)

STEPS = {"cuda": 30, "cpu": 6}
# samples/s of lerobot-train may differ from autotune's by this share before the verdict says so:
# its decoder, preprocessing and sampler differ from the probe's (see the README's table).
SAMPLES_TOLERANCE = 0.25
EXIT_DIFFERS = 3
SHIM = Path(__file__).with_name("shim.py")
_STEP = re.compile(
    r"\bstep:\S+ .*?\bupdt_s:(?P<updt>[\d.]+) data_s:(?P<data>[\d.]+)(?: prep_s:(?P<prep>[\d.]+))?"
)
_STEP_MAIN = re.compile(r"\bdata_s:(?P<data>[\d.]+) prep_s:(?P<prep>[\d.]+) updt_s:(?P<updt>[\d.]+)")
_PARAMS = re.compile(r"num_learnable_params=(\d+)")


@dataclass
class TrainerRun:
    """What lerobot-train did and used."""

    exit_code: int
    timed_out: bool
    last_line: str
    learnable_params: int | None
    updt_s: float | None
    data_s: float | None  # with the preprocessing and device copy, as autotune's data_s has them
    steps_timed: int
    peak_bytes: int  # CPU: resident-set growth over start-up; CUDA: the caching allocator's reserve
    workers_pss_bytes: int
    wall_s: float
    # The warm-up's own peak, up to the first optimizer step (CUDA: cuDNN's algorithm search
    # included, which peak_bytes leaves out, as the probes do); 0 where the shim saw none.
    warmup_peak_bytes: int = 0


@dataclass
class Verdict:
    status: str  # verified, differs or failed
    text: str
    differences: list[str] = field(default_factory=list)


def entry_module(trainer: Trainer) -> str:
    """The module whose ``main()`` the trainer's ``lerobot-train`` script calls."""
    if trainer.lerobot_train is not None:
        with contextlib.suppress(OSError):
            found = re.search(r"^from (\S+) import main", trainer.lerobot_train.read_text(), flags=re.M)
            if found:
                return found.group(1)
    return "lerobot.scripts.train" if trainer.abilities.since == "0.3" else "lerobot.scripts.lerobot_train"


def parse_log(text: str) -> tuple[int | None, list[tuple[float, float]]]:
    """The learnable parameter count and each logged step's (updt_s, data_s incl. prep_s)."""
    params = _PARAMS.search(text)
    steps = []
    for line in text.splitlines():
        match = _STEP_MAIN.search(line) or _STEP.search(line)
        if match and "step:" in line:
            prep = float(match.group("prep")) if match.group("prep") else 0.0
            steps.append((float(match.group("updt")), float(match.group("data")) + prep))
    return (int(params.group(1)) if params else None), steps


def run_trainer(trainer: Trainer, profile: Profile, steps: int, timeout_s: float) -> TrainerRun:
    """Run the profile's command in ``trainer`` for ``steps`` steps, isolated, and measure it."""
    assert trainer.python is not None
    args = list(profile.lerobot_train_args)
    if profile.policy == "act":
        args.append("--policy.pretrained_backbone_weights=null")  # offline; the same memory and time
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(profile.lerobot_train_env)
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    with tempfile.TemporaryDirectory(prefix="autotune-verify-") as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "train.log"
        args += [
            f"--steps={steps}",
            "--log_freq=1",
            "--save_checkpoint=false",
            trainer.abilities.tracker_off,
            f"--output_dir={Path(tmp) / 'out'}",
        ]
        # Run from a copy: the script's folder goes first on sys.path, and autotune's modules
        # (profile.py, ...) would shadow the standard library's in the trainer's Python.
        shim = Path(tmp) / SHIM.name
        shim.write_text(SHIM.read_text())
        cmd = [str(trainer.python), str(shim), str(result_path), entry_module(trainer), *args]
        log.info("running %s for %d steps: %s", trainer.label, steps, " ".join(args))
        started = time.perf_counter()
        timed_out = False
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BaseException:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # workers the trainer left behind
                proc.wait()
        wall_s = time.perf_counter() - started
        text = log_path.read_text(errors="replace")
        measured = json.loads(result_path.read_text()) if result_path.exists() else {}
    params, timed = parse_log(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = measured.get("error") or next(
        (line for line in reversed(lines) if "Error" in line or "error:" in line), lines[-1] if lines else ""
    )
    timed = timed[1:]  # the first step starts the DataLoader's workers
    cuda = profile.fingerprint.get("device_type") == "cuda"
    return TrainerRun(
        exit_code=measured.get("exit_code", proc.returncode if proc.returncode is not None else 1),
        timed_out=timed_out,
        last_line=last,
        learnable_params=params,
        updt_s=statistics.fmean(u for u, _ in timed) if timed else None,
        data_s=statistics.fmean(d for _, d in timed) if timed else None,
        steps_timed=len(timed),
        peak_bytes=int(measured.get("cuda_peak_reserved_bytes" if cuda else "peak_growth_bytes", 0)),
        workers_pss_bytes=int(measured.get("workers_pss_bytes", 0)),
        wall_s=wall_s,
        warmup_peak_bytes=int(measured.get("warmup_peak_bytes", 0)),
    )


def warmup_text(run: TrainerRun) -> str:
    """The warm-up's peak in words (set apart from ``peak_bytes``, as the probes set theirs apart)."""
    return f"warm-up peak {format_bytes(run.warmup_peak_bytes)} (up to the first optimizer step, set apart)"


def judge(profile: Profile, run: TrainerRun) -> Verdict:
    """Compare what lerobot-train did with what the profile promised."""
    label = f"lerobot-train {profile.lerobot_version}".strip()
    if run.timed_out or run.exit_code != 0:
        why = "did not finish in time" if run.timed_out else f"failed (exit {run.exit_code})"
        oom = "out of memory" in run.last_line.lower() or "OutOfMemoryError" in run.last_line
        return Verdict("failed", f"{label} {why}{' running out of memory' if oom else ''}: {run.last_line}")
    cond = profile.conditions
    budget = profile.budget_bytes or cond.memory_limit_bytes
    promised = (1 - cond.headroom) * budget
    differences = []
    expected = profile.trainable_params or 0
    if run.learnable_params is None:
        differences.append(f"{label} logged no parameter count")
    elif expected and run.learnable_params != expected:
        differences.append(
            f"parameters: {run.learnable_params:,} in {label}, {expected:,} measured by autotune"
        )
    if run.peak_bytes > promised:
        differences.append(
            f"peak memory {format_bytes(run.peak_bytes)}, over the {format_bytes(promised)} the profile "
            f"promised ({cond.headroom:.0%} headroom of {format_bytes(budget)})"
        )
    samples = (
        profile.batch_size / (run.updt_s + run.data_s)
        if run.updt_s is not None and run.data_s is not None
        else None
    )
    if samples is None:
        differences.append(f"{label} logged no timed steps; raise --steps")
    elif abs(samples / profile.samples_per_s - 1) > SAMPLES_TOLERANCE:
        differences.append(
            f"{samples:.2f} samples/s against the profile's {profile.samples_per_s:.2f} "
            f"({samples / profile.samples_per_s - 1:+.0%}; tolerance {SAMPLES_TOLERANCE:.0%})"
        )
    summary = (
        f"peak {format_bytes(run.peak_bytes)} of {format_bytes(budget)} (promised at most {format_bytes(promised)})"
        + (f", {warmup_text(run)}" if run.warmup_peak_bytes else "")
        + (f", {samples:.2f} samples/s (profile {profile.samples_per_s:.2f})" if samples else "")
        + (f", {run.learnable_params:,} learnable parameters" if run.learnable_params else "")
    )
    if differences:
        text = f"{label} differs from the profile: " + "; ".join(differences)
        if run.warmup_peak_bytes:
            text += f" ({warmup_text(run)})"
        return Verdict("differs", text, differences)
    return Verdict("verified", f"verified in {label}: {summary}")


def check_machine(profile: Profile, path: Path, trainer: Trainer) -> None:
    """The profile must come from this machine and be made for this trainer."""
    device = profile.conditions.device
    now = fp.take(device, probe_environment(), trainer.version)
    changed = now.changes_from(profile.fingerprint)
    if changed:
        raise UserError(
            f"{path} was tuned on another machine or setup ({', '.join(changed)} changed); re-tune here: "
            f"autotune run --policy {profile.policy} --force"
        )
    made_for = profile.lerobot_version
    if made_for and made_for != trainer.version:
        raise UserError(
            f"{path} was made for lerobot-train {made_for} and this is {trainer.version}; re-tune for it: "
            f"autotune run --policy {profile.policy} --force"
        )
    root = profile.conditions.dataset
    if not (Path(root) / "meta" / "info.json").exists():
        raise UserError(
            f"{path}: its dataset {root} is gone; re-tune: autotune run --policy {profile.policy}"
        )


def verify_profile(
    results: Path,
    policy: str,
    *,
    lerobot: str | None = None,
    trainer: Trainer | None = None,
    steps: int | None = None,
    timeout_s: float = 900.0,
) -> int:
    """Verify the latest profile of ``policy`` in the real lerobot-train; the exit code."""
    path = profile_path(results, policy)
    read = read_profile(results, policy)  # validated: a bad profile is one line naming the field
    if read is None:
        raise UserError(f"no {policy} profile in {path}; run: autotune run --policy {policy}")
    profile = read
    if profile.gpus > 1:
        raise UserError(
            f"the {policy} profile is for {profile.gpus} GPUs under DDP and verify runs lerobot-train "
            "in one process; run the printed command yourself, or tune with --gpus 1 to verify"
        )
    trainer = trainer if trainer is not None and trainer.python is not None else find_trainer(lerobot)
    if trainer.python is None:
        raise UserError(
            "verify runs lerobot-train on this machine and found none (not on PATH); "
            "pass --lerobot PATH to its lerobot-train or its environment"
        )
    check_machine(profile, path, trainer)
    device_type = profile.fingerprint.get("device_type", "cpu")
    run = run_trainer(trainer, profile, steps or STEPS[device_type], timeout_s)
    verdict = judge(profile, run)
    record(results, profile, trainer, run, verdict)
    print(verdict.text)
    if verdict.status == "failed":
        return 1
    return 0 if verdict.status == "verified" else EXIT_DIFFERS


def record(results: Path, profile: Profile, trainer: Trainer, run: TrainerRun, verdict: Verdict) -> None:
    """A ``verify.csv`` row, and the verdict in the profile (rewritten atomically, never removed)."""
    cond = profile.conditions
    samples = (
        profile.batch_size / (run.updt_s + run.data_s)
        if run.updt_s is not None and run.data_s is not None and run.updt_s + run.data_s > 0
        else None
    )
    key = profile_run_key(profile, new_run_id())
    row = {
        "profile_run_id": profile.run_id,
        "lerobot_version": trainer.version,
        "status": verdict.status,
        "batch_size": profile.batch_size,
        "steps": run.steps_timed,
        "learnable_params": run.learnable_params,
        "trainable_params": profile.trainable_params or None,
        "promised_bytes": int((1 - cond.headroom) * (profile.budget_bytes or cond.memory_limit_bytes)),
        "peak_bytes": run.peak_bytes,
        "warmup_peak_bytes": run.warmup_peak_bytes,
        "profile_peak_bytes": profile.peak_reserved_bytes,
        "workers_pss_bytes": run.workers_pss_bytes,
        "updt_s": run.updt_s,
        "data_s": run.data_s,
        "samples_per_s": round(samples, 4) if samples else None,
        "profile_updt_s": profile.updt_s,
        "profile_data_s": profile.data_s,
        "profile_samples_per_s": profile.samples_per_s,
        "wall_s": round(run.wall_s, 3),
        "message": verdict.text,
    }
    ResultsWriter(results, key).add("verify.csv", row)
    verification = {
        **{
            k: row[k]
            for k in (
                "status",
                "lerobot_version",
                "steps",
                "peak_bytes",
                "warmup_peak_bytes",
                "promised_bytes",
                "samples_per_s",
            )  # fmt: skip
        },
        "verdict": verdict.text,
        "differences": verdict.differences,
        "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    rewrite_profile(results, profile.policy, {"verification": verification})
