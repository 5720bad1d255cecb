"""``autotune train``: lerobot-train at the tuned settings, watched, and restarted when it runs out of memory.

The trainer runs as a child in a session of its own, its output streamed to stdout line by line
and read for its logged steps (:mod:`autotune.trainer.train_watch`). Ctrl-C and SIGTERM are passed
to its whole process group (its DataLoader workers with it), which is killed outright after
:data:`GRACE_S`; nothing is left behind. When it dies of out-of-memory
(:func:`autotune.trainer.train_log.died_of_oom`), it is started again at a lower batch
(:func:`autotune.trainer.train_flags.lower_batch`): from its last checkpoint with ``--resume=true``,
or from scratch where no checkpoint exists and less than :data:`SCRATCH_LIMIT_S` of training would
be lost. At most :data:`MAX_RESTARTS` restarts, one line each. Each out-of-memory goes into the
profile (``training_ooms``, ``learned_headroom``), so the next tune leaves that margin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from autotune.errors import UserError
from autotune.outputs.profile import Profile, rewrite_profile
from autotune.run.context import new_run_id
from autotune.trainer import train_flags as F
from autotune.trainer.train_log import died_of_oom
from autotune.trainer.train_watch import Watch, reference, run_key
from autotune.trainer.verify import entry_module
from autotune.trainer.versions import Trainer

log = logging.getLogger(__name__)

MAX_RESTARTS = 3
SCRATCH_LIMIT_S = 300.0  # without a checkpoint, restart from scratch only when less was trained
GRACE_S = 30.0  # after Ctrl-C or SIGTERM, the trainer's time to stop before it is killed
TAIL_LINES = 60  # of the trainer's output, kept to read why it stopped
LEROBOT_LOG_FREQ = 200  # lerobot-train's --log_freq default


@dataclass
class Plan:
    """What to launch: the trainer, its flags and environment, and what a restart needs."""

    trainer: Trainer
    profile: Profile
    args: list[str]
    env: dict[str, str]
    output_dir: Path
    made_output_dir: bool  # autotune named it and it did not exist: a restart from scratch may clear it
    batch_size: int
    accumulation: int
    log_freq: int
    replaced: list[str] = field(default_factory=list)
    tuned_env: dict[str, str] = field(default_factory=dict)  # what the command sets (the rest is inherited)

    def argv(self, args: list[str]) -> list[str]:
        if self.trainer.lerobot_train is not None:
            return [str(self.trainer.lerobot_train), *args]
        return [str(self.trainer.python), "-m", entry_module(self.trainer), *args]

    def text(self, args: list[str]) -> str:
        """The command as a person would type it: the tuned environment this shell does not have."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.tuned_env.items() if os.environ.get(k) != v)
        line = "lerobot-train " + " ".join(shlex.quote(a) for a in args)
        return f"{env} {line}" if env else line


@dataclass
class Attempt:
    exit_code: int
    signal: int | None  # the signal the user sent (forwarded), if any
    tail: list[str]
    wall_s: float
    trained_s: float  # from the first logged step on (0: none logged)
    last_step: int | None


def plan(profile: Profile, trainer: Trainer, user_args: list[str]) -> Plan:
    """The first launch: the profile's flags and environment with the user's over them."""
    if profile.gpus > 1:
        raise UserError(
            f"the {profile.policy} profile is for {profile.gpus} GPUs under DDP and autotune train "
            "launches one process; run its printed command (autotune show --policy "
            f"{profile.policy}), or tune with --gpus 1"
        )
    merged = F.merge(profile.lerobot_train_args, profile.lerobot_train_env, user_args, os.environ)
    flags = F.parse_flags(merged.args)
    out = F.value_of(flags, "output_dir")
    made = out is None
    if out is None:
        out = F.default_output_dir(profile.policy)
        merged.args.append(f"--output_dir={out}")
    batch = int(F.value_of(flags, "batch_size") or profile.batch_size)
    accum_flag = trainer.abilities.grad_accumulation_flag
    accumulation = int(F.value_of(flags, accum_flag.removeprefix("--")) or 1) if accum_flag else 1
    env = {**os.environ, **merged.env, "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    log_freq = int(F.value_of(flags, "log_freq") or LEROBOT_LOG_FREQ)
    return Plan(trainer, profile, merged.args, env, Path(out), made and not Path(out).exists(), batch,
                accumulation, log_freq, merged.replaced, merged.env)  # fmt: skip


def train(profile: Profile, trainer: Trainer, user_args: list[str], results: Path) -> int:
    """Train, watched; restart on out-of-memory; the exit code."""
    if trainer.python is None:
        raise UserError(
            "autotune train runs lerobot-train on this machine and found none (not on PATH); "
            "pass --lerobot PATH to its lerobot-train or its environment"
        )
    p = plan(profile, trainer, user_args)
    for line in p.replaced:
        print(f"autotune: {line}")
    for caveat in profile.lerobot_train_caveats:
        log.warning("%s", caveat)
    if p.batch_size > profile.max_batch_size:
        log.warning("batch %d is over the certified maximum %d: it may run out of memory", p.batch_size, profile.max_batch_size)  # fmt: skip
    watch = Watch(results, profile, run_key(profile, new_run_id(), trainer.version), reference(results, profile), p.log_freq)  # fmt: skip
    args, batches = p.args, [p.batch_size]
    for attempt in range(MAX_RESTARTS + 1):
        watch.start(attempt, p.batch_size, p.accumulation)
        print(
            f"autotune: training{' (restart ' + str(attempt) + ')' if attempt else ''}: {p.text(args)}",
            flush=True,
        )
        done = launch(p, args, watch)
        code = _finished(p, done, watch)
        if code is not None:
            return code
        why = died_of_oom(done.exit_code, done.tail, stopped_by_us=False)
        args = restart(p, done, why, watch, results, attempt)
        batches.append(p.batch_size)
    tried = ", ".join(str(b) for b in batches[:-1])
    raise UserError(
        f"lerobot-train ran out of memory {MAX_RESTARTS + 1} times (batches {tried}); re-tune with more "
        f"headroom: autotune run --policy {profile.policy} --headroom {min(0.5, profile.conditions.headroom + 0.2):.2f} --force"
    )


def _finished(p: Plan, done: Attempt, watch: Watch) -> int | None:
    """The exit code where this attempt ends the training (done, failed, interrupted); None where it
    ran out of memory and may be restarted."""
    step = {"step": done.last_step, "wall_s": round(done.wall_s, 3)}
    if done.signal is not None:
        watch.event("interrupted", message=f"stopped by {signal.Signals(done.signal).name}", **step)
        print(
            f"autotune: training stopped by {signal.Signals(done.signal).name}; checkpoints are in {p.output_dir}"
        )
        return 128 + done.signal
    if done.exit_code == 0:
        watch.event("finished", message="", **step)
        print(
            f"autotune: training finished at step {done.last_step} with batch {p.batch_size} (in {p.output_dir})"
        )
        return 0
    why = died_of_oom(done.exit_code, done.tail, stopped_by_us=False)
    if not why:
        last = next((line for line in reversed(done.tail) if line.strip()), "")
        watch.event("failed", message=last, **step)
        print(f"autotune: error: lerobot-train failed (exit {done.exit_code}): {last}", file=sys.stderr)
        return done.exit_code if 0 < done.exit_code < 128 else 1
    watch.event("oom", message=why, **step)
    return None


def checkpoint_config(output_dir: Path) -> Path | None:
    """The last checkpoint's ``train_config.json`` (``checkpoints/last`` links the newest)."""
    found = output_dir / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    return found if found.exists() else None


def restart(p: Plan, done: Attempt, why: str, watch: Watch, results: Path, attempt: int) -> list[str]:
    """The flags of the next attempt after an out-of-memory, said in one line; or one line why not."""
    failed = p.batch_size
    budget = p.profile.budget_bytes or p.profile.conditions.memory_limit_bytes
    lower = F.lower_batch(failed, p.profile.memory_model, budget)
    where = f"after step {done.last_step}" if done.last_step is not None else "before its first logged step"
    if lower < 1:
        raise UserError(
            f"lerobot-train ran out of memory {where} at batch {failed} ({why}); no smaller batch is left"
        )
    flag = p.trainer.abilities.grad_accumulation_flag
    accumulation = p.accumulation
    if flag:  # keep the effective batch
        lower, accumulation = F.keep_effective(failed * p.accumulation, lower)
    if attempt >= MAX_RESTARTS:
        return []  # the caller gives up, with its own line
    config = checkpoint_config(p.output_dir)
    if config is not None:
        args = F.resume_args(str(config), lower, (flag, accumulation) if flag else None)
        how = f"from the checkpoint at {_last_step(p.output_dir)} (--resume=true)"
    elif done.trained_s <= SCRATCH_LIMIT_S and p.made_output_dir:
        args = [
            a for a in p.args if not a.startswith("--batch_size=") and not (flag and a.startswith(f"{flag}="))
        ]
        args += [f"--batch_size={lower}", *([f"{flag}={accumulation}"] if flag and accumulation > 1 else [])]
        shutil.rmtree(
            p.output_dir, ignore_errors=True
        )  # autotune named it for this training: no checkpoint in it
        how = f"from scratch ({done.trained_s:.0f} s of training lost; no checkpoint yet)"
    else:
        lost = f"after {done.trained_s / 60:.0f} min " if done.trained_s > SCRATCH_LIMIT_S else ""
        raise UserError(
            f"lerobot-train ran out of memory {where} at batch {failed} {lost}with no checkpoint to resume "
            f"from; train again with --batch_size={lower} (and a --save_freq that writes a checkpoint "
            "before then, so that autotune can resume)"
        )
    learn(results, p, failed, lower, done, why)
    p.batch_size, p.accumulation = lower, accumulation
    effective = f" x {accumulation} accumulation steps (effective {lower * accumulation})" if flag else ""
    print(
        f"autotune: lerobot-train ran out of memory {where} at batch {failed} ({why}); restarting {how} "
        f"with batch {lower}{effective} (restart {attempt + 1} of {MAX_RESTARTS})",
        flush=True,
    )
    watch.event("restart", step=done.last_step, message=f"batch {failed} -> {lower}, {how}")
    return args


def _last_step(output_dir: Path) -> str:
    """``step 4`` for the checkpoint ``checkpoints/last`` links to."""
    with contextlib.suppress(OSError, ValueError):
        return f"step {int(Path(os.readlink(output_dir / 'checkpoints' / 'last')).name)}"
    return "checkpoints/last"


def learn(results: Path, p: Plan, failed: int, lower: int, done: Attempt, why: str) -> None:
    """The out-of-memory into the profile: the event, and the headroom the next tune leaves."""
    prof = p.profile
    model = prof.memory_model or {}
    budget = prof.budget_bytes or prof.conditions.memory_limit_bytes
    per_sample = float(model.get("per_sample_bytes") or 0)
    # From the peak measured at the tuned batch: the line's own may put that batch over its headroom
    at = prof.peak_reserved_bytes + per_sample * (lower - prof.batch_size)
    keeps = 1 - at / budget if per_sample and budget else prof.conditions.headroom + F.LOWER_BY
    learned = round(min(0.5, max(prof.conditions.headroom, prof.learned_headroom, keeps)), 4)
    event = {
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lerobot_version": p.trainer.version,
        "batch_size": failed,
        "step": done.last_step,
        "restarted_with": lower,
        "message": why,
    }
    prof.training_ooms = [*prof.training_ooms, event]
    prof.learned_headroom = learned
    changes = {"training_ooms": prof.training_ooms, "learned_headroom": learned}
    rewrite_profile(results, prof.policy, changes, history=True)


class Signals:
    """The user's Ctrl-C and SIGTERM while the trainer runs: passed to its whole process group."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.received, self.sent_at = proc, [], 0.0
        self.previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}

    def _forward(self, signum: int, frame: object) -> None:
        if not self.received:
            self.sent_at = time.perf_counter()
            log.info(
                "passing %s to lerobot-train (killed after %.0f s)", signal.Signals(signum).name, GRACE_S
            )
        self.received.append(signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def overdue(self) -> bool:
        return bool(self.received) and time.perf_counter() - self.sent_at > GRACE_S

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def launch(p: Plan, args: list[str], watch: Watch) -> Attempt:
    """Run the trainer once: stream its output, watch it, pass the user's signals on."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        p.argv(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=p.env, start_new_session=True
    )
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_read, args=(proc, lines), daemon=True).start()
    signals = Signals(proc)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    first_step_at: float | None = None
    try:
        while (line := _next(lines, proc, signals)) is not None:
            sys.stdout.buffer.write(line)  # as the trainer wrote it, progress bars' carriage returns too
            sys.stdout.flush()
            for part in line.decode(errors="replace").replace("\r", "\n").splitlines():
                tail.append(part)
                if watch.line(part) is not None and first_step_at is None:
                    first_step_at = time.perf_counter()
    finally:
        _kill(proc)  # the trainer, if this stopped early, and the DataLoader workers it left behind
        proc.wait()
        _gone(proc.pid)
        signals.restore()
    now = time.perf_counter()
    return Attempt(
        exit_code=proc.returncode,
        signal=signals.received[0] if signals.received else None,
        tail=list(tail),
        wall_s=now - started,
        trained_s=now - first_step_at if first_step_at is not None else 0.0,
        last_step=watch.last_step,
    )


def _next(lines: queue.Queue[bytes | None], proc: subprocess.Popen[bytes], signals: Signals) -> bytes | None:
    """The trainer's next line; None at its end. Past the grace after a signal, it is killed."""
    while True:
        try:
            return lines.get(timeout=1.0)
        except queue.Empty:
            if signals.overdue() or proc.poll() is not None:
                _kill(proc)  # past the grace; or the trainer is gone and its workers hold the pipe


def _gone(group: int, timeout_s: float = 10.0) -> None:
    """Wait until no process of the trainer's group is left (killed workers take a moment to go)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    log.warning("processes of lerobot-train's group %d are still there after %.0f s", group, timeout_s)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read(proc: subprocess.Popen[bytes], lines: queue.Queue[bytes | None]) -> None:
    for line in proc.stdout or ():
        lines.put(line)
    lines.put(None)
