"""The tuned profile: ``<results>/profiles/<policy>.json``, versioned, written atomically; when it is stale."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from autotune.errors import UserError
from autotune.files import write_atomic
from autotune.machine.fingerprint import Fingerprint
from autotune.outputs.validate import RULES, MemoryModelFields, ProfileError, at, build, missing, shown

log = logging.getLogger(__name__)

PROFILE_VERSION = 1


@dataclass
class Conditions:
    """What the measurements assumed; a profile only applies under the same conditions."""

    device: str
    precision: str
    grad_checkpointing: bool
    cameras: int
    image_size: list[int]  # [H, W]
    state_dim: int
    action_dim: int
    memory_limit_bytes: int
    memory_limit_is_default: bool  # the card's free memory (CUDA) or half the available RAM (CPU)
    headroom: float
    dataset: str
    dataset_kind: str  # "synthetic" or "user"
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    compare: bool = False  # gradient checkpointing on and off were both tuned
    compare_precisions: list[str] = field(default_factory=list)
    target_batch: int | None = None
    lerobot_version: str = ""  # the lerobot-train the answer is made for
    beside_precision: str | None = None  # the bf16 + checkpointing answer tuned beside, at this precision
    backend: str = "rebuilt"  # who built and trained the policy in the probes: rebuilt or lerobot
    gpus: int = 1  # DDP ranks the batch was tuned for (batch per GPU)
    # CUDA: the caching allocator's settings (PYTORCH_CUDA_ALLOC_CONF, PYTORCH_ALLOC_CONF) the probes
    # ran with and the command hands lerobot-train; "" when unset (fingerprint.allocator_conf)
    cuda_alloc_conf: str = ""
    # The video decoder the worker study measured with, and the trainer decodes with as printed
    # ("torchcodec" or "pyav"; "" in profiles from before it was recorded).
    video_backend: str = ""


@dataclass
class Comparison:
    """One variant tuned by ``--compare``."""

    precision: str
    grad_checkpointing: bool
    max_batch_size: int
    batch_size: int
    samples_per_s: float
    per_sample_bytes: float | None
    probes: int


@dataclass
class WorkerSetting:
    num_workers: int
    prefetch_factor: int | None
    data_s: float
    updt_s: float
    samples_per_s: float


@dataclass
class Profile:
    """Everything a run decided and measured. Memory in bytes, times in seconds."""

    policy: str
    run_id: str
    created_at: str
    fingerprint: dict[str, Any]
    conditions: Conditions
    precision: str  # what the tuned values hold for (the fastest variant, with --compare)
    grad_checkpointing: bool
    max_batch_size: int
    certified: bool
    batch_size: int
    headroom_batch_size: int  # the largest batch that keeps the headroom
    grad_accum_steps: int
    num_workers: int
    prefetch_factor: int | None
    data_s: float
    updt_s: float
    samples_per_s: float
    peak_allocated_bytes: int  # at batch_size, measured by its probe or predicted by the fit
    peak_reserved_bytes: int
    max_batch_peak_reserved_bytes: int
    memory_model: dict[str, float] | None
    throughput_curve: list[dict[str, Any]]
    soaks: list[dict[str, Any]]
    comparisons: list[Comparison]
    lerobot_default: WorkerSetting | None
    speedup_vs_default: float | None
    search: dict[str, Any]
    study: dict[str, Any]
    plots: dict[str, str]
    loader_model: dict[str, Any] | None
    input_bound: dict[str, Any] | None
    lerobot_train_args: list[str]
    lerobot_train_command: str
    lerobot_version: str = ""  # the lerobot-train the command is made for
    lerobot_source: str = ""  # how it was found: PATH, path (--lerobot), flag (--lerobot-version), assumed
    backend: str = "rebuilt"  # who measured: "rebuilt" (autotune's models) or "lerobot X.Y" (LeRobot's own)
    gpus: int = 1  # DDP ranks: batch_size is per GPU
    effective_batch_size: int = 0  # batch_size x gpus x grad_accum_steps
    lerobot_train_env: dict[str, str] = field(default_factory=dict)  # set before lerobot-train
    lerobot_train_reproduces: bool = True  # the command trains what was measured
    lerobot_train_caveats: list[str] = field(default_factory=list)  # why it would not
    beside: dict[str, Any] | None = None  # the bf16 + checkpointing answer measured beside
    budget_bytes: int = 0  # the budget the probes really had (their cap; the asked limit or less)
    trainable_params: int = 0  # of the model the probes trained
    total_params: int = 0
    verification: dict[str, Any] | None = None  # the latest `autotune verify`
    # speedup_vs_default's spread (one standard error) and the paired runs it rests on (0: single
    # trials); every comparison that could change the answer, against the noise (autotune.tuning.noise).
    speedup_vs_default_spread: float | None = None
    speedup_vs_default_pairs: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The video decoder: the one measured and printed (conditions.video_backend), the one the
    # trainer picks by itself, each one's measured seconds per sample for one process, and why the
    # trainer's torchcodec does not serve (with the remedy), where it does not.
    video_backend: str = ""
    video_backend_default: str = ""
    decode_s_by_backend: dict[str, float] = field(default_factory=dict)
    video_backend_note: str = ""
    # autotune train: each time lerobot-train ran out of memory at this profile's setting (the
    # batch, the step, the batch it went on with), and the headroom the next tune leaves because of
    # it (conditions.headroom is the larger of --headroom and this; 0: none learned).
    training_ooms: list[dict[str, Any]] = field(default_factory=list)
    learned_headroom: float = 0.0
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """The profile in ``data`` (a profile's JSON), checked field by field against the dataclass:
        every field without a default present, each of its type (numbers finite), the values in
        range (a batch of at least 1, a memory model with a positive slope, ...). ``ProfileError``
        naming the first field that is wrong. Keys it does not know are left out."""
        if not isinstance(data, dict):
            raise ProfileError(f"holds {type(data).__name__}, not an object")
        absent = missing(cls, data, "")
        absent += missing(Conditions, data.get("conditions"), "conditions.")
        if isinstance(data.get("memory_model"), dict):
            absent += missing(MemoryModelFields, data["memory_model"], "memory_model.")
        if absent:
            raise ProfileError(
                f"an autotune profile without {', '.join(absent[:4])}{' and more' if len(absent) > 4 else ''}"
            )
        profile = build(cls, data, "")
        if profile.memory_model is not None:  # a dict of numbers by its type; MemoryModel's fields
            build(MemoryModelFields, profile.memory_model, "memory_model.")
        for name, rule in RULES.items():
            value = at(profile, name)
            if value is not None and (problem := rule(value)):
                raise ProfileError(f"{name} is {shown(value)}: {problem}")
        return profile


# What `show`, `predict` and `verify` read: a profile without them is refused in one line.
REQUIRED_FIELDS = tuple(
    f.name for f in fields(Profile) if f.default is MISSING and f.default_factory is MISSING
)
REQUIRED_CONDITIONS = tuple(
    f.name for f in fields(Conditions) if f.default is MISSING and f.default_factory is MISSING
)


def profile_path(results: Path, policy: str) -> Path:
    return results / "profiles" / f"{policy}.json"


def write_profile(results: Path, profile: Profile) -> Path:
    """Write the latest profile atomically, and a copy under ``profiles/history/``."""
    path = profile_path(results, profile.policy)
    history = path.parent / "history" / f"{profile.policy}-{profile.run_id}.json"
    text = json.dumps(profile.to_dict(), indent=2) + "\n"
    for target in (history, path):
        write_atomic(target, text)
    return path


def rewrite_profile(results: Path, policy: str, changes: dict[str, Any], *, history: bool = False) -> Path:
    """Set ``changes`` in the latest profile of ``policy``, atomically (a verdict, say); with
    ``history``, in its copy under ``profiles/history/`` too."""
    path = profile_path(results, policy)
    profile = read_profile(results, policy)
    if profile is None:
        raise UserError(f"no {policy} profile in {path}")
    data = {**profile.to_dict(), **changes}
    text = json.dumps(data, indent=2) + "\n"
    copy = path.parent / "history" / f"{policy}-{profile.run_id}.json"
    for target in (copy, path) if history else (path,):
        write_atomic(target, text)
    return path


def read_profile(results: Path, policy: str) -> Profile | None:
    """The latest profile of ``policy``, or None if there is none: the one reader every command
    uses (show, predict, verify, the nightly check, run's up-to-date test). A profile that cannot be
    read or holds what no run writes is a UserError in one line naming the file and the field."""
    path = profile_path(results, policy)
    if not path.exists():
        return None
    advice = f"move it aside or re-tune (autotune run --policy {policy} --force)"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: cannot be read (bytes that are not UTF-8 at offset {exc.start}); {advice}"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON (JSONDecodeError), or NaN-like junk
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"{path}: cannot be read ({reason}); {advice}") from None
    if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION:
        raise UserError(f"{path}: not a version-{PROFILE_VERSION} autotune profile; {advice}")
    try:
        return Profile.from_dict(data)
    except ProfileError as exc:
        raise UserError(f"{path}: {exc}; {advice}") from None


def _comparable(conditions: dict[str, Any]) -> dict[str, Any]:
    """Conditions as compared between runs: a default budget (the card's free memory) varies a
    little from run to run, so only an explicit --memory-limit is compared."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in conditions.items()}
    if out.get("memory_limit_is_default"):
        out.pop("memory_limit_bytes", None)
    return out


def stale_reasons(existing: dict[str, Any], fingerprint: Fingerprint, conditions: Conditions) -> list[str]:
    """Why an existing profile does not apply now (empty: it is up to date)."""
    reasons = [f"{k} changed" for k in fingerprint.changes_from(existing.get("fingerprint", {}))]
    old = _comparable(existing.get("conditions", {}))
    for key, value in _comparable(asdict(conditions)).items():
        if key not in old or old[key] != value:
            reasons.append(f"{key} changed")
    return reasons


def conditions_key(conditions: Conditions, fingerprint: Fingerprint, extra: dict[str, Any]) -> str:
    """A short hash of the conditions, the fingerprint and ``extra``: what a study's name is keyed on."""
    blob = json.dumps(
        {"conditions": _comparable(asdict(conditions)), "fingerprint": fingerprint.to_dict(), **extra},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def up_to_date(
    results: Path, policy: str, fingerprint: Fingerprint, conditions: Conditions
) -> Profile | None:
    """The existing profile if nothing it depends on changed since; else None (and why, logged)."""
    profile = read_profile(results, policy)
    if profile is None:
        return None
    reasons = stale_reasons(profile.to_dict(), fingerprint, conditions)
    if reasons:
        log.info("re-tuning: %s", ", ".join(reasons))
        return None
    return profile


def require_profile(results: Path, policy: str) -> Profile:
    """The latest profile of ``policy``, validated; one line when there is none yet."""
    profile = read_profile(results, policy)  # validated: a bad profile is one line naming the field
    if profile is None:
        raise UserError(
            f"no {policy} profile in {profile_path(results, policy)}; run: autotune run --policy {policy}"
        )
    return profile
