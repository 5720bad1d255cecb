"""The video decoder the trainer uses and the one autotune measures with (autotune.trainer.decoder)."""

from __future__ import annotations

import sys

import pytest

from autotune.trainer.command import command
from autotune.trainer.decoder import FFMPEG_PACKAGES, TorchcodecState, decide, for_dataset, torchcodec_state
from autotune.trainer.versions import Trainer
from tests.autotune.test_lerobot import setting
from tests.e2e.shared import LEROBOT

OK = TorchcodecState("ok", "0.17.0")
BROKEN = TorchcodecState("error", "Could not load libtorchcodec")
MISSING = TorchcodecState("missing")


def test_where_both_load_the_trainers_torchcodec_is_measured_and_nothing_is_added() -> None:
    decoder = decide(OK, OK, "lerobot-train 0.6.1")
    assert (decoder.trainer_default, decoder.measured, decoder.flag, decoder.note) == (
        "torchcodec", "torchcodec", None, ""
    )  # fmt: skip


def test_a_trainer_torchcodec_autotune_cannot_load_is_measured_as_pyav_and_asked_for() -> None:
    decoder = decide(OK, MISSING, "lerobot-train 0.6.1")
    assert decoder.trainer_default == "torchcodec" and decoder.measured == "pyav"
    assert decoder.flag == "--dataset.video_backend=pyav"
    assert "bash scripts/setup.sh" in decoder.note


def test_0_6_1_falls_back_to_pyav_where_its_torchcodec_cannot_load() -> None:
    decoder = decide(BROKEN, OK, "lerobot-train 0.6.1", fallback=True)
    assert (decoder.trainer_default, decoder.measured, decoder.flag) == ("pyav", "pyav", None)
    assert "cannot load (Could not load libtorchcodec)" in decoder.note and FFMPEG_PACKAGES in decoder.note


def test_before_0_6_1_a_broken_torchcodec_would_fail_so_the_command_asks_for_pyav() -> None:
    decoder = decide(BROKEN, OK, "lerobot-train 0.5.1", fallback=False)
    assert decoder.trainer_default == "torchcodec" and decoder.measured == "pyav"
    assert decoder.flag == "--dataset.video_backend=pyav" and "fail on the first video frame" in decoder.note


def test_without_torchcodec_the_trainer_decodes_with_pyav() -> None:
    decoder = decide(MISSING, OK, "lerobot-train 0.6.1")
    assert (decoder.trainer_default, decoder.measured, decoder.flag, decoder.note) == (
        "pyav",
        "pyav",
        None,
        "",
    )


@pytest.mark.parametrize(
    ("version", "fallback"), [("0.4.4", False), ("0.5.1", False), ("0.6.0", False), ("0.6.1", True)]
)
def test_which_releases_fall_back_as_read_in_their_source(version: str, fallback: bool) -> None:
    assert Trainer(version, "flag").abilities.torchcodec_fallback is fallback


@pytest.mark.parametrize("version", ["0.3.3", "0.4.4", "0.6.1", "0.6.2.dev0"])
def test_the_command_names_the_measured_decoder_only_where_the_trainer_would_pick_another(
    version: str,
) -> None:
    trainer = Trainer(version, "flag")
    same = command(trainer, setting(video_backend="torchcodec", trainer_video_backend="torchcodec"))
    assert not any(a.startswith("--dataset.video_backend") for a in same.args)
    other = command(trainer, setting(video_backend="pyav", trainer_video_backend="torchcodec"))
    assert "--dataset.video_backend=pyav" in other.args
    assert other.caveats == same.caveats  # the decoder adds none (0.3 reads another dataset format)


def test_torchcodec_state_is_read_in_each_real_environment() -> None:
    own = torchcodec_state(None)
    assert own.loads and own.detail.startswith("0.17"), own  # the pin in constraints.txt
    assert torchcodec_state(sys.executable) == own
    if (LEROBOT / "bin" / "python").exists():  # made by bash scripts/setup.sh --test, as in CI
        theirs = torchcodec_state(LEROBOT / "bin" / "python")
        assert theirs.loads and theirs.detail.startswith("0.11"), theirs  # what lerobot 0.6.1 pins
    missing = torchcodec_state(LEROBOT / "bin" / "no-such-python")
    assert missing.state == "error" and "could not check" in missing.detail


def test_a_dataset_the_trainers_torchcodec_cannot_decode_is_measured_and_trained_with_pyav() -> None:
    chosen = decide(OK, OK, "lerobot-train 0.6.1")
    failed = {"torchcodec": "dataset x.mp4: no frame within 0.0001 s of timestamp 0.900000 s"}
    decoder = for_dataset(chosen, failed, "lerobot-train 0.6.1")
    assert decoder.measured == "pyav" and decoder.flag == "--dataset.video_backend=pyav"
    assert "cannot decode this dataset (dataset x.mp4" in decoder.note
    assert for_dataset(chosen, {}, "lerobot-train 0.6.1") is chosen
    both = {**failed, "pyav": "dataset x.mp4: truncated"}  # neither decodes: the run fails on it later
    assert for_dataset(chosen, both, "lerobot-train 0.6.1") is chosen
