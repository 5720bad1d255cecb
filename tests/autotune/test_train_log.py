"""autotune train's reading of lerobot-train: its logged steps per version, its flags and its out-of-memory.

The step lines are real lerobot-train output as users published it (the ``ot_train.py:NNN`` prefix
is the line of ``logging.info(train_tracker)``, which dates the release: 435 is 0.4.4, 451 is 0.5.1,
641 is 0.6.1, 769 is main from 2026-08-12).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from autotune.errors import UserError
from autotune.outputs.profile import Profile, read_profile, write_profile
from autotune.run.prepare import learned_headroom
from autotune.trainer import train as T
from autotune.trainer import train_flags as F
from autotune.trainer.train_log import died_of_oom, oom_line, parse_number, parse_step
from autotune.trainer.train_watch import Watch, reference, run_key
from autotune.trainer.versions import Trainer

# 0.4.4 (a tqdm bar glued to the front, the step printed as 50K).
V044 = (
    "Training: 100%|██████████████████████▉| 49800/50000 [2:38:21<00:38,  5.25step/s]INFO 2026-07-31 "
    "02:12:17 ot_train.py:435 step:50K smpl:398K ep:326 epch:6.80 loss:0.046 grdn:3.230 lr:1.0e-05 "
    "updt_s:0.185 data_s:0.005"
)
# 0.5.1.
V051 = (
    "INFO 2026-04-09 12:39:40 ot_train.py:451 step:200 smpl:2K ep:8 epch:1.14 loss:2.137 grdn:4.207 "
    "lr:5.0e-05 updt_s:0.439 data_s:0.699"
)
# 0.6.1, ACT on CUDA: smp/s, mem_gb and the policy's losses.
V061 = (
    "Training:   1% 200/20000 [02:32<3:13:45,  1.70step/s]INFO 2026-08-02 15:46:13 ot_train.py:641 "
    "step:200 smpl:2K ep:1 epch:0.02 loss:7.175 grdn:161.603 lr:1.0e-05 updt_s:0.565 data_s:0.196 "
    "smp/s:11 mem_gb:3.74 l1_loss:0.588 kld_loss:0.659"
)
# main: data_s, prep_s, updt_s and step_s.
MAIN = (
    "INFO 2026-09-07 17:51:44 ot_train.py:769 step:20 smpl:160 ep:1 epch:0.01 loss:10.084 grdn:258.561 "
    "lr:1.0e-05 data_s:0.001 prep_s:0.000 updt_s:0.041 step_s:0.042 smp/s:188 mem_gb:0.95 l1_loss:0.675 "
    "kld_loss:0.941"
)


def test_each_versions_step_line_gives_its_times() -> None:
    old = parse_step(V051)
    assert old is not None and old.step == 200 and old.step_exact
    assert (old.updt_s, old.data_s, old.prep_s, old.samples_per_s_logged, old.mem_gb) == (
        0.439,
        0.699,
        None,
        None,
        None,
    )
    assert old.samples_per_s(8) == pytest.approx(8 / (0.439 + 0.699))
    new = parse_step(V061)
    assert new is not None and (new.updt_s, new.data_s, new.samples_per_s_logged, new.mem_gb) == (
        0.565,
        0.196,
        11,
        3.74,
    )
    assert new.loss == 7.175 and new.samples_per_s(8) == pytest.approx(
        10.5, abs=0.1
    )  # LeRobot's 11, unrounded
    main = parse_step(MAIN)
    assert main is not None and (main.data_s, main.prep_s, main.updt_s, main.mem_gb) == (
        0.001,
        0.0,
        0.041,
        0.95,
    )
    assert main.wait_s == pytest.approx(0.001) and main.samples_per_s(8) == pytest.approx(8 / 0.042)


def test_a_step_printed_in_thousands_follows_the_previous_step() -> None:
    alone = parse_step(V044)
    assert alone is not None and alone.step == 50_000 and not alone.step_exact
    assert (alone.updt_s, alone.data_s) == (0.185, 0.005)
    followed = parse_step(V044.replace("step:50K", "step:1K"), previous_step=1200, log_freq=200)
    assert followed is not None and followed.step == 1400  # LeRobot prints 1,400 as 1K
    far = parse_step(V044.replace("step:50K", "step:3K"), previous_step=1200, log_freq=200)
    assert far is not None and far.step == 3000  # a gap in the log: the printed figure is all there is
    assert parse_number("398K") == (398_000, False) and parse_number("1.0e-05") == (1e-05, True)


@pytest.mark.parametrize(
    "line",
    [
        "INFO 2026-08-02 15:40:01 ot_train.py:571 Output dir: outputs/train/act",
        "Training:   1% 200/20000 [02:32<3:13:45,  1.70step/s]",
        "INFO 2026-08-02 15:40:01 ot_train.py:641 cfg.steps=20000 (20K)",
    ],
)
def test_other_lines_are_not_steps(line: str) -> None:
    assert parse_step(line) is None


def test_out_of_memory_is_read_from_the_traceback_or_the_kernels_kill() -> None:
    cuda = [
        "Traceback (most recent call last):",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    ]
    assert "CUDA out of memory" in died_of_oom(1, cuda, stopped_by_us=False)
    cpu = [
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1125899906842624 bytes. Error code 12 (Cannot allocate memory)"
    ]  # noqa: E501
    assert died_of_oom(1, cpu, stopped_by_us=False).startswith("RuntimeError")
    assert oom_line(["RuntimeError: CUDA error: out of memory"]) and oom_line(["cublasCreate"]) == ""
    assert "out-of-memory killer" in died_of_oom(-9, ["step:4"], stopped_by_us=False)
    assert died_of_oom(-9, [], stopped_by_us=True) == ""  # autotune's own kill after Ctrl-C
    assert died_of_oom(1, ["ValueError: bad dataset"], stopped_by_us=False) == ""
    assert died_of_oom(0, cuda, stopped_by_us=False) == ""


# --- the flags -----------------------------------------------------------------------------------

TUNED = [
    "--dataset.repo_id=autotune/synthetic", "--dataset.root=/r/datasets/synthetic", "--policy.type=act",
    "--policy.device=cuda", "--policy.push_to_hub=false", "--batch_size=24", "--num_workers=4",
    "--prefetch_factor=4", "--policy.use_amp=true",
]  # fmt: skip


def test_the_users_flags_win_and_each_replaced_value_is_one_line() -> None:
    merged = F.merge(
        TUNED, {"CUDA_VISIBLE_DEVICES": "0"}, ["--batch_size", "8", "--steps=100", "--num_workers=4"],
        {"CUDA_VISIBLE_DEVICES": "1", "HOME": "/root"},
    )  # fmt: skip
    assert "--batch_size=8" in merged.args and "--batch_size=24" not in merged.args
    assert merged.args.count("--num_workers=4") == 1 and merged.args[-2:] == [
        "--steps=100",
        "--num_workers=4",
    ]
    assert merged.replaced == [
        "--batch_size=8 (yours) replaces the tuned --batch_size=24",
        "CUDA_VISIBLE_DEVICES=1 (yours) replaces the tuned CUDA_VISIBLE_DEVICES=0",
    ]
    assert merged.env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_a_dataset_or_policy_named_by_the_user_replaces_the_tuned_pair() -> None:
    merged = F.merge(TUNED, {}, ["--dataset.repo_id=me/pusht", "--policy.path=me/act_base"], {})
    assert not any(a.startswith(("--dataset.root=", "--policy.type=")) for a in merged.args)
    assert "--dataset.repo_id=me/pusht" in merged.args and "--policy.path=me/act_base" in merged.args
    assert any("--dataset.root=/r/datasets/synthetic left out" in line for line in merged.replaced)
    assert F.dataset_of(["--dataset.repo_id=me/pusht", "--dataset.root", "/data/pusht"]) == "/data/pusht"
    assert F.dataset_of(["--steps=5"]) is None


def test_anything_but_a_flag_after_the_separator_is_one_line() -> None:
    with pytest.raises(UserError, match="'pusht' is not one"):
        F.parse_flags(["pusht"])
    assert [f.text for f in F.parse_flags(["--resume", "--steps", "5"])] == ["--resume", "--steps=5"]


def test_a_lower_batch_leaves_more_of_the_budget_free_and_keeps_the_effective_batch() -> None:
    gib = 1024**3
    model = {"fixed_bytes": 2 * gib, "per_sample_bytes": 0.25 * gib}
    lower = F.lower_batch(40, model, 16 * gib)  # 12 GiB at 40; 10% of 16 GiB less: 10.4 GiB -> 33
    assert lower == 33 and 2 + 0.25 * lower <= 12 - 1.6
    assert F.lower_batch(10, None, 0) == 7  # without a model: 30% less
    assert F.lower_batch(1, model, 16 * gib) == 0  # nothing smaller
    assert F.lower_batch(29, {"per_sample_bytes": 1.5 * 1024**2}, 470 * 1024**2) == 14  # never below half
    assert F.keep_effective(64, 33) == (32, 2)  # 32 x 2 = 64
    assert F.keep_effective(60, 7) == (6, 10)
    assert F.keep_effective(97, 40) == (40, 3)  # a prime: rounded up
    assert F.resume_args("/o/checkpoints/last/pretrained_model/train_config.json", 33) == [
        "--config_path=/o/checkpoints/last/pretrained_model/train_config.json", "--resume=true", "--batch_size=33",
    ]  # fmt: skip


# --- the watch and the restart decision ------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "sample" / "act-cpu-profile.json"


def sample_profile() -> Profile:
    return Profile.from_dict(json.loads(SAMPLE.read_text()))


def line(step: int, updt_s: float, data_s: float) -> str:
    return (
        f"INFO 2026-12-06 10:00:00 ot_train.py:641 step:{step} smpl:{step * 20} ep:0 epch:0.01 loss:1.0 "
        f"grdn:1.0 lr:1.0e-05 updt_s:{updt_s:.3f} data_s:{data_s:.3f} smp/s:5"
    )


def watched(tmp_path: Path, profile: Profile) -> Watch:
    return Watch(tmp_path, profile, run_key(profile, "r1", "0.6.1"), reference(tmp_path, profile), log_freq=1)


def test_each_logged_step_is_a_row_and_a_slow_training_is_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = sample_profile()  # 4.76 samples/s at batch 20, never verified: 25% allowed
    watch = watched(tmp_path, profile)
    for step in range(1, 4):
        watch.line(line(step, 4.1, 0.01))  # 4.87 samples/s: as promised
    assert not caplog.records
    for step in range(4, 9):
        watch.line(line(step, 6.0, 0.01))  # 3.33 samples/s: 30% below
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "3.33 samples/s, below the 4.76 of autotune's probes" in warnings[0]
    assert "re-tune to measure what would help" in warnings[0]
    rows = pd.read_csv(tmp_path / "train_runs.csv")
    assert list(rows.step) == list(range(1, 9)) and set(rows.event) == {"step"}
    assert rows.samples_per_s.iloc[0] == pytest.approx(
        20 / 4.11, rel=1e-3
    ) and rows.run_id.unique().tolist() == ["r1"]


def test_a_step_that_starts_waiting_on_data_is_warned_with_the_diagnosis_remedy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = sample_profile()
    profile.input_bound = {"remedies": [{"what": "8 workers", "measured": True}]}
    watch = watched(tmp_path, profile)
    watch.line(line(1, 4.0, 3.0))  # the first window starts the workers: set apart
    for step in range(2, 4):
        watch.line(line(step, 4.0, 1.0))
    assert not caplog.records  # two in a row are not yet a trend
    watch.line(line(4, 4.0, 1.0))
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("the step waits on data: data_s 1.000 s of 5.000 s a step (20%; tuned 0%)")
    assert warning.endswith("would help (measured): 8 workers")


def test_a_restart_resumes_from_the_checkpoint_or_from_scratch_or_says_what_to_set(tmp_path: Path) -> None:
    profile = sample_profile()  # memory model: 810 MiB + 49.4 MiB a sample, budget 2 GiB
    trainer = Trainer("0.6.1", "path", python=Path(sys.executable), lerobot_train=Path("/usr/bin/true"))
    results = tmp_path / "results"
    write_profile(results, profile)
    out = tmp_path / "out"
    plan = T.Plan(trainer, profile, ["--batch_size=20", f"--output_dir={out}"], {}, out, True, 20, 1, 1)
    watch = watched(results, profile)
    done = T.Attempt(exit_code=1, signal=None, tail=[], wall_s=60.0, trained_s=60.0, last_step=2)
    args = T.restart(plan, done, "DefaultCPUAllocator: can't allocate memory", watch, results, 0)
    assert plan.batch_size == 15 and args == ["--output_dir=" + str(out), "--batch_size=15"]  # from scratch
    learned = read_profile(results, "act")
    assert learned is not None and learned.training_ooms[0]["restarted_with"] == 15
    # The room batch 15 leaves, from the peak measured at the tuned batch 20 (1797.7 MiB).
    assert learned.learned_headroom == pytest.approx(1 - (1797.7 - 49.39 * 5) / 2048, abs=0.001)
    kept = json.loads((results / "profiles" / "history" / f"act-{profile.run_id}.json").read_text())
    assert kept["training_ooms"] == learned.training_ooms  # in the history too
    # The next tune leaves that margin: its headroom is the larger of --headroom and the learned one.
    assert learned_headroom(results, "act", 0.1) == learned.learned_headroom
    assert learned_headroom(results, "act", 0.6) == learned.learned_headroom  # run takes the larger
    assert learned_headroom(tmp_path / "elsewhere", "act", 0.1) == 0.0

    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    ckpt.mkdir(parents=True)
    (ckpt / "train_config.json").write_text("{}")
    (out / "checkpoints" / "last").symlink_to("000002")
    args = T.restart(plan, done, "oom", watch, results, 1)
    assert args[:2] == [
        f"--config_path={out}/checkpoints/last/pretrained_model/train_config.json",
        "--resume=true",
    ]
    assert args[2] == f"--batch_size={plan.batch_size}" and plan.batch_size < 15

    shutil.rmtree(out)
    long = T.Attempt(exit_code=1, signal=None, tail=[], wall_s=900.0, trained_s=900.0, last_step=400)
    with pytest.raises(
        UserError, match=r"after step 400 at batch \d+ after 15 min with no checkpoint to resume"
    ):
        T.restart(plan, long, "oom", watch, results, 2)


def test_an_out_of_memory_raises_the_headroom_where_the_memory_line_overshoots_the_measured_peak(
    tmp_path: Path,
) -> None:
    # Measured in CI: a cut-down ACT's line (436 MB + 1.02 MB a sample) put the tuned batch 21 at
    # 93% of the budget, where its measured peak was 442 MB (90%); the line alone left 0.094 < 0.1.
    profile = sample_profile()
    profile.batch_size, profile.peak_reserved_bytes, profile.budget_bytes = 21, 442_437_632, 492_830_720
    profile.memory_model = {**profile.memory_model, "fixed_bytes": 436_264_645, "per_sample_bytes": 1_016_753}
    trainer = Trainer("0.6.1", "path", python=Path(sys.executable), lerobot_train=Path("/usr/bin/true"))
    results = tmp_path / "results"
    write_profile(results, profile)
    out = tmp_path / "out"
    plan = T.Plan(trainer, profile, ["--batch_size=21", f"--output_dir={out}"], {}, out, True, 21, 1, 1)
    done = T.Attempt(exit_code=1, signal=None, tail=[], wall_s=60.0, trained_s=60.0, last_step=2)
    T.restart(plan, done, "DefaultCPUAllocator: can't allocate memory", watched(results, profile), results, 0)
    learned = read_profile(results, "act")
    assert learned is not None and learned.training_ooms[0]["restarted_with"] == plan.batch_size < 21
    assert learned.learned_headroom > profile.conditions.headroom
