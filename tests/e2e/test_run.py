"""`autotune run` end to end on the CPU, through the same code path as on a GPU: real probe
children, a real synthetic LeRobot video dataset, a real Optuna study in SQLite, the profile and
the CSVs. The model is ACT (and SmolVLA) reduced in width and depth so CI stays fast."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli import autotune
from tests.e2e.shared import HAS_LEROBOT, RUN_ACT

pytestmark = pytest.mark.slow


def test_run_writes_a_profile_with_a_certified_maximum(act_run) -> None:
    cwd, proc = act_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    assert profile["version"] == 1
    assert profile["certified"] is True
    assert 1 <= profile["batch_size"] <= profile["max_batch_size"]
    assert profile["conditions"]["image_size"] == [48, 64]
    assert profile["conditions"]["cameras"] == 2
    assert profile["conditions"]["precision"] == "fp32"
    assert profile["conditions"]["memory_limit_bytes"] == 470 * 1024**2
    assert profile["peak_reserved_bytes"] <= 0.9 * 470 * 1024**2
    assert profile["fingerprint"]["cpu_cores"] >= 1 and profile["fingerprint"]["torch_version"]
    assert profile["samples_per_s"] > 0 and profile["updt_s"] > 0 and profile["data_s"] >= 0
    # LeRobot's default (4 workers) was measured over --host-memory-limit: never recommended.
    workers = next(d for d in profile["decisions"] if d["what"] == "workers")
    assert profile["lerobot_default"] is None and workers["verdict"] == "default not measured"
    assert profile["num_workers"] < 4
    assert f"--batch_size={profile['batch_size']}" in profile["lerobot_train_command"]
    assert f"--num_workers={profile['num_workers']}" in profile["lerobot_train_command"]
    # lerobot-train 0.6.1 decodes with torchcodec where it loads (FFmpeg's libraries are installed
    # by the set-up): the workers were measured with it, and the command need not say so.
    assert profile["video_backend"] == profile["video_backend_default"] == "torchcodec"
    assert profile["conditions"]["video_backend"] == "torchcodec" and not profile["video_backend_note"]
    assert "--dataset.video_backend" not in profile["lerobot_train_command"]
    assert set(profile["decode_s_by_backend"]) == {"torchcodec", "pyav"}


def test_run_prints_the_summary_and_ends_with_the_lerobot_command(act_run) -> None:
    _, proc = act_run
    lines = proc.stdout.strip().splitlines()
    # On a CPU the command carries the allocator settings the probes measured under.
    assert lines[-1].startswith("MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 lerobot-train ")
    assert " --dataset.repo_id=" in lines[-1] and "--policy.type=act" in lines[-1]
    assert any(line.strip().startswith("trainer") and "lerobot-train 0.6.1" in line for line in lines)
    assert any(line.strip().startswith("max batch size") for line in lines)
    assert "probe" in proc.stderr and "trial" in proc.stderr  # progress went to stderr
    assert "estimated on the meta device" in proc.stderr  # each search started from the estimate


def test_csvs_share_one_run_id_and_certify_the_maximum(act_run) -> None:
    cwd, _ = act_run
    results = cwd / "results"
    probes = pd.read_csv(results / "batch_probes.csv")
    trials = pd.read_csv(results / "worker_trials.csv")
    runs = pd.read_csv(results / "runs.csv")
    profile = json.loads((results / "profiles" / "act.json").read_text())
    run_id = profile["run_id"]
    assert set(probes.run_id) == set(trials.run_id) == set(runs.run_id) == {run_id}
    top = profile["max_batch_size"]
    mine = probes[probes.grad_checkpointing == profile["grad_checkpointing"]]
    assert (mine[mine.batch_size == top].status == "ok").all()
    assert (mine[mine.batch_size == top + 1].status == "oom").all()
    # The study's 2 trials; repeats (measured again against LeRobot's default) share their numbers.
    assert len(trials[trials.repeat == 0]) == 2
    (default,) = trials[trials.is_lerobot_default].itertuples()
    assert (default.num_workers, default.prefetch_factor, default.status) == (4, 4, "oom")
    assert "host budget (--host-memory-limit)" in default.message
    assert set(trials.video_backend) == {profile["video_backend"]}
    assert set(trials.trial) == set(trials[trials.repeat == 0].trial)
    assert runs.status.tolist() == ["ok"] and runs.max_batch_size.tolist() == [top]
    # Only the oom probes are above the budget.
    fitting = probes[probes.status == "ok"]
    assert (fitting.peak_reserved_bytes <= 470 * 1024**2).all()


def test_a_second_run_finds_the_profile_up_to_date_checks_it_and_flags_a_regression(act_run) -> None:
    cwd, _ = act_run
    results = cwd / "results"
    runs_csv = results / "runs.csv"
    runs_before = runs_csv.read_text()
    quiet = autotune(*RUN_ACT, "--no-check", cwd=cwd)
    assert quiet.returncode == 0 and "up to date" in quiet.stdout
    assert runs_csv.read_text() == runs_before  # nothing measured
    # A history of checks ten times faster than this machine: the check (one run of the suite's,
    # for both what a check measures and what it flags) must call its own figure a regression.
    runs = pd.read_csv(runs_csv, keep_default_na=False, dtype=str)
    earlier = runs[runs.status == "ok"].iloc[-1].to_dict()
    fast = float(earlier["samples_per_s"]) * 10
    history = [earlier | {"run_id": f"past-{i}", "samples_per_s": str(fast + i)} for i in range(5)]
    pd.concat([runs, pd.DataFrame(history)]).to_csv(runs_csv, index=False)
    with_history = runs_csv.read_text()
    proc = autotune(*RUN_ACT, cwd=cwd)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "up to date" in proc.stdout and "autotune: checked: batch" in proc.stdout
    assert any(line.startswith("autotune: regression: samples/s") for line in proc.stdout.splitlines())
    runs = pd.read_csv(runs_csv)
    assert runs_csv.read_text().startswith(with_history)  # appended to, never rewritten
    assert runs.status.tolist()[-1] == "checked" and runs.samples_per_s.iloc[-1] > 0
    assert pd.read_csv(results / "batch_probes.csv").phase.tolist()[-1] == "check"
    assert pd.read_csv(results / "worker_trials.csv").trial.tolist()[-1] == -1
    alerts = pd.read_csv(results / "alerts.csv")
    # Only samples/s was made to differ; a busy machine may add an updt_s alert of its own.
    mine = alerts[alerts.run_id == runs.run_id.iloc[-1]]
    assert ("regression", "samples_per_s") in zip(mine.kind, mine.metric, strict=True), mine.to_string()


def test_show_prints_the_profile(act_run) -> None:
    cwd, _ = act_run
    proc = autotune("show", "--policy", "act", cwd=cwd)
    assert proc.returncode == 0
    assert "max batch size" in proc.stdout and " lerobot-train " in proc.stdout.strip().splitlines()[-1]


def test_a_failed_run_leaves_earlier_results_intact(act_run) -> None:
    cwd, _ = act_run
    results = cwd / "results"
    profile_before = (results / "profiles" / "act.json").read_bytes()
    probes_before = (results / "batch_probes.csv").read_text()
    runs_before = (results / "runs.csv").read_text()
    # Not even batch 1 fits (ResNet-18's weights, gradients and AdamW state alone are ~180 MiB), yet
    # above the 64 MiB that --memory-limit refuses outright.
    args = [a if a != "470MiB" else "100MiB" for a in RUN_ACT] + ["--no-estimate", "--trainer-only"]
    proc = autotune(*args, cwd=cwd)
    assert proc.returncode == 2
    assert "even batch 1 does not fit" in proc.stderr and "Traceback" not in proc.stderr
    assert (results / "profiles" / "act.json").read_bytes() == profile_before
    assert (results / "batch_probes.csv").read_text().startswith(probes_before)
    runs = pd.read_csv(results / "runs.csv")
    assert (results / "runs.csv").read_text().startswith(runs_before)
    assert runs.status.tolist()[-1] == "failed"


def test_the_interrupted_study_resumes_from_sqlite(act_run) -> None:
    import optuna

    cwd, _ = act_run
    storage = f"sqlite:///{cwd / 'results' / 'studies' / 'act.db'}"
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1 and summaries[0].n_trials == 2


def test_by_default_the_trainers_answer_and_the_checkpointed_one_beside_it(act_run) -> None:
    cwd, proc = act_run
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    # lerobot-train 0.6.1 (the tests' release, --lerobot; assumed where it is not installed) has no
    # checkpointing for ACT: the printed answer is measured without it, and reproduces; the
    # checkpointed one is measured beside it.
    assert profile["lerobot_version"] == "0.6.1"
    assert profile["lerobot_source"] == ("path" if HAS_LEROBOT else "assumed")
    assert profile["grad_checkpointing"] is False and profile["lerobot_train_reproduces"]
    beside = profile["beside"]
    assert beside["grad_checkpointing"] is True and beside["precision"] == "fp32"
    assert beside["max_batch_size"] > profile["max_batch_size"]  # checkpointing saves memory
    assert beside["lerobot_train_command"] is None and "#4149" in beside["why_no_command"]
    assert any(line.strip().startswith("beside") for line in proc.stdout.splitlines())
    probes = pd.read_csv(cwd / "results" / "batch_probes.csv")
    assert set(probes.grad_checkpointing) == {True, False}
    trials = pd.read_csv(cwd / "results" / "worker_trials.csv")
    assert set(trials.grad_checkpointing) == {False}  # the workers are tuned for the printed answer


def test_the_profile_carries_the_curve_the_soak_and_the_memory_model(act_run) -> None:
    cwd, _ = act_run
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    assert profile["soaks"] and profile["soaks"][-1]["status"] == "ok"
    assert profile["soaks"][-1]["batch_size"] == profile["batch_size"]
    # The curve holds the recommended batch and nothing above the headroom (a soak that lowered
    # the batch may leave it the only point).
    sizes = [p["batch_size"] for p in profile["throughput_curve"]]
    assert profile["batch_size"] in sizes and max(sizes) < profile["max_batch_size"]
    model = profile["memory_model"]
    assert model["per_sample_bytes"] > 0 and model["measured_max_batch"] == profile["max_batch_size"]
    # The line through the probes alone predicts the measured maximum within 5%.
    assert abs(model["raw_prediction_error"]) <= 0.05
    for png in profile["plots"].values():
        assert Path(png if Path(png).is_absolute() else cwd / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probes = pd.read_csv(cwd / "results" / "batch_probes.csv")
    assert {"search", "soak"} <= set(probes.phase)
    assert profile["trainable_params"] == profile["total_params"] > 0  # every ACT parameter trains


def test_predict_reads_the_memory_model_of_the_latest_profile(act_run) -> None:
    cwd, _ = act_run
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    proc = autotune("predict", "--policy", "act", "--memory", "470MiB", "--budget", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    same = json.loads(proc.stdout)
    assert abs(same["max_batch"] - profile["max_batch_size"]) <= 0.05 * profile["max_batch_size"]
    bigger = json.loads(
        autotune("predict", "--policy", "act", "--memory", "520MiB", "--budget", "--json", cwd=cwd).stdout
    )
    assert bigger["max_batch"] > same["max_batch"]
    text = autotune("predict", "--policy", "act", "--memory", "450MiB", "--budget", cwd=cwd).stdout
    assert "predicted max batch" in text and "--memory-limit" in text
    tiny = autotune("predict", "--policy", "act", "--memory", "1KiB", cwd=cwd)
    assert tiny.returncode == 2 and "too small for act as measured: even batch 1 needs about" in tiny.stderr
