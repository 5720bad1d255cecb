"""What lerobot-train's output says: its logged steps, per version, and whether it died of out-of-memory.

LeRobot logs a step as ``name:value`` fields after its logging prefix
(``INFO 2026-03-02 10:31:52 ot_train.py:641 step:200 smpl:2K ...``), every ``--log_freq`` steps
(``MetricsTracker.__str__`` in ``lerobot/utils/logging_utils.py``):

- 0.4 and 0.5: ``step smpl ep epch loss grdn lr updt_s data_s``;
- 0.6.1: ``... lr updt_s data_s smp/s``, ``mem_gb`` where CUDA is available, then the policy's own
  losses;
- main: ``... lr data_s prep_s updt_s step_s smp/s mem_gb``.

``step``, ``smpl`` and ``ep`` go through ``format_big_number`` (``1K`` from 1,000 on, no decimals),
and ``smp/s`` has no decimals either, so samples/s is worked out from the batch and the times:
``batch x ranks / (data_s + prep_s + updt_s)``, as LeRobot works out its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from probes.protocol import CUBLAS_CREATE_FAILED, OOM_TEXTS

_FIELD = re.compile(r"(?<!\S)(?P<name>[A-Za-z_/]+):(?P<value>-?[\d.]+(?:e[-+]?\d+)?[KMBTQ]?)(?!\S)")
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12, "Q": 10**15}

# How an out-of-memory reads in a trainer's output, besides the CUDA library texts the probes know
# (probes.protocol.OOM_TEXTS): PyTorch's caching allocator, its CPU allocator, Python's own.
TRAINER_OOM_TEXTS = (
    "torch.OutOfMemoryError",
    "torch.cuda.OutOfMemoryError",
    "CUDA out of memory",
    "DefaultCPUAllocator: can't allocate memory",
    "MemoryError",
    *OOM_TEXTS,
)
SIGKILL_EXIT = (-9, 137)  # the kernel's out-of-memory killer (or someone's kill -9)


@dataclass(frozen=True)
class StepLog:
    """One logged step of lerobot-train, as printed (times are the averages over the log window)."""

    step: int
    step_exact: bool  # False where LeRobot printed it as 1K, 2K, ...
    updt_s: float
    data_s: float
    prep_s: float | None  # main only: preprocessing, apart from data_s
    samples_per_s_logged: float | None  # smp/s (0.6.1 and main), rounded to a whole number
    mem_gb: float | None  # torch.cuda.max_memory_allocated in GiB (0.6.1 and main, CUDA only)
    loss: float | None

    @property
    def wait_s(self) -> float:
        """The step's time outside the update: loading, and preprocessing where it is apart."""
        return self.data_s + (self.prep_s or 0.0)

    def samples_per_s(self, batch_size: int, ranks: int = 1) -> float:
        total = self.updt_s + self.wait_s
        return batch_size * ranks / total if total > 0 else 0.0


def parse_number(text: str) -> tuple[float, bool]:
    """``"200"`` -> (200, True); ``"2K"`` -> (2000, False): LeRobot's ``format_big_number``."""
    suffix = text[-1] if text and text[-1] in "KMBTQ" else ""
    value = float(text[: len(text) - len(suffix)]) * _SUFFIX[suffix]
    return value, suffix == ""


def parse_step(line: str, previous_step: int | None = None, log_freq: int | None = None) -> StepLog | None:
    """The step ``line`` logs, or None where it is not a step line. A step printed as ``2K`` is
    read as ``previous_step + log_freq`` where that agrees with it."""
    fields = {m.group("name"): m.group("value") for m in _FIELD.finditer(line)}
    if not {"step", "updt_s", "data_s"} <= fields.keys():
        return None
    step, exact = parse_number(fields["step"])
    if not exact and previous_step is not None and log_freq:
        following = previous_step + log_freq
        if abs(following - step) <= 500 * _SUFFIX[fields["step"][-1]] / 1000:
            step = following
    number = {k: parse_number(v)[0] for k, v in fields.items() if k != "step"}
    return StepLog(
        step=int(step),
        step_exact=exact,
        updt_s=number["updt_s"],
        data_s=number["data_s"],
        prep_s=number.get("prep_s"),
        samples_per_s_logged=number.get("smp/s"),
        mem_gb=number.get("mem_gb"),
        loss=number.get("loss"),
    )


def oom_line(lines: Iterable[str]) -> str:
    """The line of a trainer's output that says it ran out of memory ("" where none does)."""
    for line in lines:
        if any(t in line for t in TRAINER_OOM_TEXTS) or CUBLAS_CREATE_FAILED.search(line):
            return line.strip()
    return ""


def died_of_oom(exit_code: int, tail: list[str], stopped_by_us: bool) -> str:
    """Why the trainer's exit means out-of-memory ("" where it does not): a line of its output
    that says so, or a SIGKILL autotune did not send (the kernel's out-of-memory killer)."""
    if exit_code == 0:
        return ""
    said = oom_line(tail)
    if said:
        return said
    if exit_code in SIGKILL_EXIT and not stopped_by_us:
        return f"killed by SIGKILL (exit {exit_code}): the kernel's out-of-memory killer"
    return ""
