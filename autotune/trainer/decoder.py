"""The video decoder lerobot-train will decode with, and the one autotune's probes measure with.

LeRobot 0.3 to 0.6.1 pick ``--dataset.video_backend`` by itself: torchcodec where ``import
torchcodec`` succeeds in the trainer's environment (its FFmpeg shared libraries load), PyAV
otherwise (``get_safe_default_video_backend``, lerobot/utils/import_utils.py@v0.6.1). That is decided
here in the trainer's own Python where it is on this machine, and in autotune's where it is not.
The probes measure with the trainer's decoder where it loads in autotune's environment too; where it
does not, they measure with PyAV and the printed command asks the trainer for PyAV, so that it
trains as measured.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from autotune.trainer.versions import Trainer
from probes.protocol import Environment

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 120.0
# FFmpeg's shared libraries torchcodec loads, as Debian 12 packages them.
FFMPEG_PACKAGES = (
    "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8"
)
# What LeRobot does to choose, run in an environment: "ok <version>", "error <first line>" or "missing".
_CHECK = """
import importlib.util
if importlib.util.find_spec("torchcodec") is None:
    print("missing")
else:
    try:
        import torchcodec
        print("ok", getattr(torchcodec, "__version__", "?"))
    except (ImportError, OSError, RuntimeError) as exc:
        words = str(exc).strip().splitlines() or [type(exc).__name__]
        print("error", words[-1] if "Traceback" in words[0] else words[0])
"""


@dataclass(frozen=True)
class TorchcodecState:
    """torchcodec in one Python environment: "ok", "error" (installed, cannot load) or "missing"."""

    state: str
    detail: str = ""  # the version where it loads, the error's line where it does not

    @property
    def loads(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class Decoder:
    """The trainer's decoder and the one measured; ``note`` says why they differ, or what would
    let the trainer decode with torchcodec."""

    trainer_default: str  # what lerobot-train decodes with when not told: "torchcodec" or "pyav"
    measured: str  # what the probes decode with, and the command asks for where it differs
    note: str = ""

    @property
    def flag(self) -> str | None:
        """``--dataset.video_backend=...`` where the trainer must be told (its own choice differs)."""
        return None if self.measured == self.trainer_default else f"--dataset.video_backend={self.measured}"


def torchcodec_state(python: Path | None = None) -> TorchcodecState:
    """torchcodec in ``python``'s environment (this one when None), checked in a fresh interpreter
    (a failed load of FFmpeg's libraries leaves nothing behind in this process)."""
    try:
        proc = subprocess.run(
            [str(python or sys.executable), "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return TorchcodecState("error", f"could not check: {exc}")
    first = (proc.stdout.strip().splitlines() or [""])[-1]
    word, _, detail = first.partition(" ")
    if word in ("ok", "error", "missing"):
        return TorchcodecState(word, detail.strip())
    return TorchcodecState("error", (proc.stderr.strip().splitlines() or ["no answer"])[-1])


def decide(
    trainer_state: TorchcodecState, own_state: TorchcodecState, trainer_label: str, fallback: bool = True
) -> Decoder:
    """The decoder ``trainer_label`` uses and the one to measure with.

    The trainer uses torchcodec where its torchcodec loads; where it is installed but cannot load,
    0.6.1 and later (``fallback``) use PyAV, and earlier releases pick torchcodec anyway and fail on
    the first frame. The probes measure with the trainer's decoder where autotune's torchcodec loads
    too, else with PyAV, which the command then asks for."""
    libraries = f"install FFmpeg's shared libraries (Debian 12: {FFMPEG_PACKAGES})"
    if trainer_state.loads:
        if own_state.loads:
            return Decoder("torchcodec", "torchcodec")
        return Decoder(
            "torchcodec",
            "pyav",
            f"{trainer_label} decodes video with torchcodec {trainer_state.detail}, which does not load in "
            f"autotune's environment ({own_state.detail or own_state.state}): measured with PyAV, and the "
            "command asks the trainer for PyAV; install torchcodec into autotune's environment "
            "(bash scripts/setup.sh) to measure and train with torchcodec",
        )
    if trainer_state.state == "error" and not fallback:
        return Decoder(
            "torchcodec",
            "pyav",
            f"{trainer_label} picks torchcodec because it is installed, but it cannot load "
            f"({trainer_state.detail}) and training would fail on the first video frame: the command "
            f"asks for PyAV, as measured; {libraries} to decode with torchcodec, then tune again",
        )
    if trainer_state.state == "error":
        return Decoder(
            "pyav",
            "pyav",
            f"{trainer_label}'s torchcodec is installed but cannot load ({trainer_state.detail}), so it "
            f"decodes video with PyAV, as measured; {libraries} to let it decode with torchcodec, then "
            "tune again",
        )
    return Decoder("pyav", "pyav")


def trainer_decoder(trainer: Trainer, environment: Environment) -> Decoder:
    """The decoder for ``trainer``, checked in its environment where it is on this machine and is
    not autotune's own (else as the environment probe found torchcodec in autotune's: an assumed
    release, --lerobot-version, or autotune installed into LeRobot's environment)."""
    own = TorchcodecState(
        environment.torchcodec_state, environment.torchcodec_version or environment.torchcodec_error
    )
    if own.state == "error":
        own = TorchcodecState("error", environment.torchcodec_error)
    elsewhere = trainer.python is not None and trainer.source != "imported"
    theirs = torchcodec_state(trainer.python) if elsewhere else own
    decoder = decide(theirs, own, trainer.label, trainer.abilities.torchcodec_fallback)
    log.info(
        "video decoder: %s decodes with %s; measuring with %s",
        trainer.label,
        decoder.trainer_default,
        decoder.measured,
    )
    if decoder.note:
        log.warning("%s", decoder.note)
    return decoder


def for_dataset(decoder: Decoder, undecodable: dict[str, str], trainer_label: str) -> Decoder:
    """``decoder``, unless its choice cannot decode samples of the dataset (the dataset probe read a
    few per episode, as LeRobot asks for them) where PyAV can: then PyAV, asked for in the command,
    since the trainer would stop at that frame."""
    failed = undecodable.get(decoder.measured)
    if failed is None or decoder.measured == "pyav" or "pyav" in undecodable:
        return decoder
    note = (
        f"{decoder.measured}, as {trainer_label} calls it, cannot decode this dataset ({failed}), so "
        "training would stop there: measured with PyAV, which decodes it, and the command asks for PyAV"
    )
    log.warning("%s", note)
    return Decoder(decoder.trainer_default, "pyav", f"{note}; {decoder.note}" if decoder.note else note)
