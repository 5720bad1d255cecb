"""Every bad input one line (issue 24): storage URLs, corrupt files, schedules, the smaller ones.

Each test drives the command as a user would (``autotune.cli.main`` in this process, or the library
call the command makes) and checks the one line, the exit code, that no password shows, and that
what was there before is untouched. The profile is a real one: ``data/act-profile.json`` is the
profile of a real ``autotune run`` of the cut-down ACT on this machine's CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autotune import fleet
from autotune.cli import main
from autotune.cli.schedule import schedule
from autotune.errors import Terminated, UserError
from autotune.outputs.profile import Profile, ProfileError, read_profile, up_to_date
from autotune.outputs.results import RUN_COLUMNS, append_rows
from autotune.redact import has_secret, hide_secrets
from autotune.run.config import RunConfig
from autotune.run.context import open_run
from autotune.run.lock import run_lock
from autotune.run.probe_client import allow_children, run_probe, stop_children
from autotune.run.results_folder import check_results_unwritten, ensure_writable
from autotune.trainer.verify import verify_profile
from autotune.trainer.versions import find_trainer
from probes.protocol import Environment, ProbeRequest

DATA = Path(__file__).with_name("data")
SECRET = "s3cr3tpw"
CPU = Environment("2.14.1", "", "", "0.29.1", False, [], [])


def real_profile() -> dict[str, Any]:
    return json.loads((DATA / "act-profile.json").read_text())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``autotune ARGS`` in this process: exit code, stdout, stderr."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's one line
        code = int(exc.code or 0)
    finally:
        signal.signal(signal.SIGTERM, handler)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str, *fragments: str) -> str:
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("[autotune]")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def results_with(tmp_path: Path, profile: Any = None, raw: bytes | None = None) -> Path:
    results = tmp_path / "results"
    (results / "profiles").mkdir(parents=True)
    path = results / "profiles" / "act.json"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(json.dumps(real_profile() if profile is None else profile))
    return results


# --- 1, 2: storage URLs that do not parse, and passwords ------------------------------------------


@pytest.mark.parametrize(
    ("command", "url"),
    [
        ("fleet", f"postgresql://u:{SECRET}@127.0.0.1:abc/db"),
        ("fleet", f"postgresql://u:{SECRET}@[::1"),
        ("fleet", f"postgresql:/u:{SECRET}@127.0.0.1/db"),  # no //: no parser finds the password
        ("fleet", f"postgresql://u:{SECRET}@127.0.0.1:99999/db"),
        ("run", f"postgresql://u:{SECRET}@127.0.0.1:abc/db"),
        ("run", f"postgresql://u:{SECRET}@[::1"),
        ("run", f"postgresql:/u:{SECRET}@127.0.0.1/db"),
    ],
)
def test_a_storage_url_that_does_not_parse_is_one_line_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, url: str
) -> None:
    args = (
        ["run", "--policy", "act", "--results", str(tmp_path / "results")] if command == "run" else ["fleet"]
    )
    code, out, err = cli(capsys, *args, "--storage", url)
    assert code == 2
    one_line(err, "--storage", "not a database URL" if ":99999" not in url else "port 99999")
    assert SECRET not in out + err
    assert not (tmp_path / "results").exists()


def test_a_password_is_masked_in_any_text_even_when_the_url_does_not_parse() -> None:
    for url, password in (
        (f"postgresql:/u:{SECRET}@127.0.0.1/db", SECRET),
        (f"postgresql://u:{SECRET}@[::1", SECRET),
        (f"postgresql+psycopg://u:{SECRET}@h/db?sslmode=require", SECRET),
        (f"postgresql://h/db?user=u&password={SECRET}", SECRET),
        (f"postgresql://u:p%40{SECRET}@h/db", f"p@{SECRET}"),  # percent-encoded: p@s3cr3tpw
    ):
        assert SECRET not in fleet.shown(url), url
        assert SECRET not in hide_secrets(f"could not connect with {url} (auth {password} refused)", url)
        assert has_secret(url)
    assert fleet.shown("sqlite:///results/x.db") == "sqlite:///results/x.db"
    assert not has_secret("sqlite:///results/x.db") and not has_secret("postgresql://u@h/db")


def test_an_unreachable_storage_names_it_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "fleet", "--storage", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db")
    assert code == 2
    one_line(err, "--storage postgresql+psycopg://u:***@127.0.0.1:1/db")
    assert SECRET not in out + err


def test_the_lock_file_keeps_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "sys.argv", ["autotune", "run", "--policy", "act", "--storage", f"postgresql://u:{SECRET}@h/db"]
    )
    with run_lock(tmp_path, "act") as path:
        held = path.read_text()
    assert "autotune run --policy act --storage postgresql://u:***@h/db" in held and SECRET not in held


def test_the_storage_url_is_read_from_a_file_only_its_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "storage.url"
    secret.write_text(f"postgresql://u:{SECRET}@127.0.0.1:1/db\n")
    secret.chmod(0o644)
    code, out, err = cli(capsys, "fleet", "--storage-file", str(secret))
    assert code == 2
    one_line(err, f"--storage-file {secret}", "chmod 600")
    assert SECRET not in out + err
    secret.chmod(0o600)
    assert fleet.resolve(None, secret) == f"postgresql://u:{SECRET}@127.0.0.1:1/db"
    monkeypatch.setenv("AUTOTUNE_STORAGE", "sqlite:///elsewhere.db")
    assert fleet.resolve(None, None) == "sqlite:///elsewhere.db"
    code, _, err = cli(capsys, "fleet", "--storage-file", str(tmp_path / "missing.url"))
    assert code == 2 and "no such file" in one_line(err)


# --- 3, 4, 5: autotune history -----------------------------------------------------------------


def run_row(run_id: str, day: int, **values: object) -> dict[str, object]:
    return {c: "" for c in RUN_COLUMNS} | {
        "run_id": run_id,
        "timestamp": f"2026-11-{day:02d}T03:00:00+00:00",
        "policy": "act",
        "device": "cpu",
        "status": "ok",
        "max_batch_size": 24,
        "batch_size": 20,
        "num_workers": 1,
        "samples_per_s": 41.5,
        "torch_version": "2.14.1",
        "lerobot_version": "0.6.1",
        **values,
    }


def history_folder(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    append_rows(results / "runs.csv", RUN_COLUMNS, [run_row("a", 20), run_row("b", 21, status="checked")])
    return results


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda p: p.write_bytes(p.read_bytes() + b"\xff\xfe oops\n"), ["not UTF-8", "move it aside"]),
        (lambda p: p.write_bytes(b""), ["is empty", "move it aside"]),
        (lambda p: p.write_text("name,score\nx,1\n"), ["columns autotune does not write", "move it aside"]),
    ],
    ids=["not-utf8", "empty", "foreign-columns"],
)
def test_history_refuses_a_runs_csv_it_cannot_read_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, fragments: list[str]
) -> None:
    results = history_folder(tmp_path)
    damage(results / "runs.csv")
    before = snapshot(results)
    code, out, err = cli(capsys, "history", "--policy", "act", "--results", str(results))
    assert code == 2 and out == ""
    one_line(err, "runs.csv", *fragments)
    assert snapshot(results) == before


def test_history_skips_a_row_with_a_value_no_run_writes_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    results = history_folder(tmp_path)
    append_rows(results / "runs.csv", RUN_COLUMNS, [run_row("c", 22, samples_per_s="fast")])
    with caplog.at_level(logging.WARNING):
        code, out, err = cli(capsys, "history", "--policy", "act", "--results", str(results))
    assert code == 0, err
    assert len([line for line in out.splitlines() if "max batch" in line]) == 2
    assert "line 4: samples_per_s 'fast' is not a number" in caplog.text


def test_history_skips_a_torn_last_row_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    results = history_folder(tmp_path)
    whole = (results / "runs.csv").read_text()
    append_rows(results / "runs.csv", RUN_COLUMNS, [run_row("c", 22, torch_version="2.15.0")])
    text = (results / "runs.csv").read_text()
    cut = text.index(",ok,", len(whole)) + len(",ok,")  # a crash just after the status
    (results / "runs.csv").write_text(text[:cut])
    with caplog.at_level(logging.WARNING):
        code, out, _ = cli(capsys, "history", "--policy", "act", "--results", str(results))
    assert code == 0
    assert len([line for line in out.splitlines() if "max batch" in line]) == 2
    assert "->" not in out  # no made-up change from the torn row
    assert "line 4 was cut short" in caplog.text
    assert (results / "runs.csv").read_text() == text[:cut]  # history only reads


def _unwritable(folder: Path) -> bool:
    """Make ``folder`` refuse new files, as root too (chattr +i); False where neither way works."""
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK):
        return True
    folder.chmod(0o700)
    chattr = shutil.which("chattr")
    return bool(chattr) and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0


def test_history_says_in_one_line_when_its_plot_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = history_folder(tmp_path)
    (results / "plots").write_text("a file where the plots folder goes")
    code, out, err = cli(capsys, "history", "--policy", "act", "--results", str(results))
    assert code == 2 and out.count("max batch") == 2  # the table, then the one line
    one_line(err, "plots", "cannot be written", "the runs above are complete")
    (results / "plots").unlink()
    (results / "plots").mkdir()
    if not _unwritable(results / "plots"):
        pytest.skip("cannot make a folder unwritable here (the file case above ran)")
    try:
        code, out, err = cli(capsys, "history", "--policy", "act", "--results", str(results))
    finally:
        subprocess.run(["chattr", "-i", str(results / "plots")], capture_output=True)
        (results / "plots").chmod(0o700)
    assert code == 2 and out.count("max batch") == 2
    one_line(err, "act-history.png cannot be written")
    assert list((results / "plots").iterdir()) == []  # no temporary file left


# --- 6, 7: profiles, validated once when read -----------------------------------------------------


def test_the_real_profile_reads_back_as_it_was_written() -> None:
    data = real_profile()
    profile = Profile.from_dict(data)
    back = profile.to_dict()

    def written(back: object, data: object) -> object:  # back, as far as data goes (fields added
        # since the sample was written read back at their defaults)
        if isinstance(data, dict) and isinstance(back, dict):
            return {k: written(back[k], v) for k, v in data.items() if k in back}
        return back

    assert written(back, data) == {k: data[k] for k in data if k in back}
    assert profile.conditions.cameras == data["conditions"]["cameras"]


def test_a_field_a_later_autotune_adds_with_a_default_keeps_old_profiles_readable() -> None:
    data = real_profile()
    data.pop("notes")  # a field with a default, as an older profile lacks those added since
    assert Profile.from_dict(data).notes == []


BAD_PROFILES = [
    (
        "memory_model.fixed_bytes",
        lambda d: d["memory_model"].pop("fixed_bytes"),
        "without memory_model.fixed_bytes",
    ),
    (
        "memory_model.per_sample_bytes",
        lambda d: d["memory_model"].update(per_sample_bytes="wide"),
        "not a finite number",
    ),
    (
        "memory_model.per_sample_bytes",
        lambda d: d["memory_model"].update(per_sample_bytes=0),
        "must be positive",
    ),
    (
        "memory_model.per_sample_bytes",
        lambda d: d["memory_model"].update(per_sample_bytes=-5e6),
        "must be positive",
    ),
    ("memory_model.budget_bytes", lambda d: d["memory_model"].update(budget_bytes=0), "must be positive"),
    ("memory_model", lambda d: d.update(memory_model=[1, 2]), "not an object"),
    ("batch_size", lambda d: d.update(batch_size="twenty"), "not a whole number"),
    ("batch_size", lambda d: d.update(batch_size=0), "at least 1"),
    ("samples_per_s", lambda d: d.update(samples_per_s=float("nan")), "not a finite number"),
    ("conditions.headroom", lambda d: d["conditions"].pop("headroom"), "without conditions.headroom"),
    ("conditions.headroom", lambda d: d["conditions"].update(headroom=1.5), "[0, 1)"),
    ("conditions.image_size", lambda d: d["conditions"].update(image_size=[48]), "[height, width]"),
    ("conditions", lambda d: d.update(conditions="cpu"), "not an object"),
    ("certified", lambda d: d.update(certified="yes"), "not true or false"),
    ("comparisons[0].max_batch_size", lambda d: d["comparisons"][0].update(max_batch_size=None), "null"),
    ("fingerprint", lambda d: d.pop("fingerprint"), "without fingerprint"),
]


@pytest.mark.parametrize(
    ("field", "damage", "problem"), BAD_PROFILES, ids=[f"{b[0]}-{b[2]}" for b in BAD_PROFILES]
)
def test_a_profile_holding_what_no_run_writes_is_refused_naming_the_field(
    field: str, damage: Any, problem: str
) -> None:
    data = copy.deepcopy(real_profile())
    damage(data)
    with pytest.raises(ProfileError) as err:
        Profile.from_dict(data)
    assert field in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize(
    "command",
    [
        ["show", "--policy", "act"],
        ["show", "--policy", "act", "--json"],
        ["predict", "--policy", "act", "--memory", "12GiB"],
        ["verify", "--policy", "act"],
    ],
)
@pytest.mark.parametrize(
    "slope", [0, -1.5e6, "wide", None], ids=["zero-slope", "negative-slope", "text-slope", "no-fixed-bytes"]
)
def test_every_reader_refuses_a_bad_memory_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], slope: Any
) -> None:
    data = real_profile()
    if slope is None:
        del data["memory_model"]["fixed_bytes"]
    else:
        data["memory_model"]["per_sample_bytes"] = slope
    results = results_with(tmp_path, data)
    before = snapshot(results)
    code, out, err = cli(capsys, *command, "--results", str(results))
    assert code == 2 and out == ""
    line = one_line(err, "act.json", "memory_model.", "move it aside or re-tune")
    assert "too small" not in line  # not the nonsense answer a zero slope gave
    assert snapshot(results) == before


@pytest.mark.parametrize(
    "command",
    [
        ["show", "--policy", "act"],
        ["verify", "--policy", "act"],
        ["predict", "--policy", "act", "--memory", "12GiB"],
    ],
)
def test_a_profile_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    results = results_with(tmp_path, raw=json.dumps(real_profile()).encode()[:-40] + b"\xff\xfe\x00")
    code, out, err = cli(capsys, *command, "--results", str(results))
    assert code == 2 and out == ""
    one_line(err, "act.json", "not UTF-8", "move it aside or re-tune")


def test_the_nightly_check_and_verify_read_the_profile_through_the_same_check(tmp_path: Path) -> None:
    data = real_profile()
    data["memory_model"]["per_sample_bytes"] = 0
    results = results_with(tmp_path, data)
    with pytest.raises(
        UserError, match=r"memory_model.per_sample_bytes is 0: must be positive; move it aside"
    ):
        up_to_date(results, "act", None, None)  # type: ignore[arg-type]  # refused before they are read
    with pytest.raises(UserError, match="memory_model.per_sample_bytes"):
        verify_profile(results, "act")
    with pytest.raises(UserError, match="memory_model.per_sample_bytes"):
        read_profile(results, "act")


def test_a_good_profile_still_predicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = results_with(tmp_path)
    code, out, err = cli(capsys, "predict", "--policy", "act", "--memory", "12GiB", "--results", str(results))
    assert code == 0, err
    assert "predicted max batch" in out


# --- 8: signals reach probe children in threads (tests/e2e/test_cli_errors.py stops the command) ---


@pytest.mark.slow
def test_stopping_kills_a_probe_child_that_a_thread_waits_on_and_starts_no_other() -> None:
    started, pids, ended = threading.Event(), [], []

    def work() -> None:
        try:
            run_probe(
                ProbeRequest(kind="environment"), 120, on_start=lambda pid: (pids.append(pid), started.set())
            )
        except Terminated as exc:
            ended.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert started.wait(60)
        stopped = time.monotonic()
        stop_children()  # what SIGTERM or Ctrl-C in the main thread does
        thread.join(5)
        assert not thread.is_alive() and ended, "the thread ran on"
        assert not Path(f"/proc/{pids[0]}").exists() and time.monotonic() - stopped < 2
        assert len(pids) == 1  # killed from inside: not run again in a fresh child
        with pytest.raises(Terminated):
            run_probe(ProbeRequest(kind="environment"), 120)
    finally:
        allow_children()
        thread.join(60)


# --- 9, 10: autotune schedule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--policy", "diffusion"], ["unknown policy 'diffusion'"]),
        (["--policy", "act", "--", "--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
        (["--policy", "act", "--", "--headroom", "5"], ["autotune run: error", "--headroom", "[0, 1)"]),
        (["--policy", "act", "--", "--image-size", "1x1"], ["--image-size", "at least 8"]),
        (["--policy", "act", "--", "--storage", f"postgresql:/u:{SECRET}@h/db"], ["not a database URL"]),
    ],
)
def test_schedule_refuses_what_the_nightly_run_would_refuse_with_its_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    fragments: list[str],
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "schedule", *flags[:2], "--install", *flags[2:])
    assert code == 2 and out == ""
    one_line(err, *fragments)
    assert SECRET not in err
    assert not (tmp_path / "config").exists()  # no timer that fails every night


@pytest.mark.parametrize("blocked", ["results is a file", "junk study"])
def test_schedule_refuses_a_results_folder_the_nightly_run_could_never_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    if blocked == "results is a file":
        results.write_text("not a folder")
        fragments = ["results folder", "is a file, not a folder"]
    else:
        (results / "studies").mkdir(parents=True)
        (results / "studies" / "act.db").write_bytes(b"\xff\xfe not SQLite " * 50)
        fragments = ["act.db is not a worker study"]
    code, out, err = cli(capsys, "schedule", "--policy", "act", "--install", "--results", str(results))
    assert code == 2 and out == ""
    one_line(err, *fragments)
    assert not (tmp_path / "config").exists()  # no timer that fails every night


def test_installed_units_hold_no_password_and_the_url_file_is_the_owners_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://autotune:{SECRET}@db.lab:5432/autotune"
    flags = ["--device", "cpu", "--storage", url]
    assert schedule("act", "03:00", tmp_path / "results", flags, install=True, environment=CPU) == 0
    printed = capsys.readouterr().out
    units = tmp_path / "config" / "systemd" / "user"
    secret = tmp_path / "config" / "autotune" / "storage-act.url"
    for path in units.iterdir():
        assert SECRET not in path.read_text()
    assert SECRET not in printed
    service = (units / "autotune-act.service").read_text()
    assert f"--storage-file {secret}" in service and "--storage " not in service
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == url + "\n"
    assert fleet.resolve(None, secret) == url  # what the nightly run reads
    # Printing only: the password is not printed either.
    assert schedule("act", "03:00", tmp_path / "results", flags, install=False, environment=CPU) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and f"--storage-file {secret}" in printed and "chmod 600" in printed


def test_a_storage_url_from_the_environment_goes_to_the_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("AUTOTUNE_STORAGE", f"postgresql://u:{SECRET}@h/db")
    monkeypatch.chdir(tmp_path)
    schedule("act", "03:00", tmp_path / "results", ["--device", "cpu"], install=False, environment=CPU)
    printed = capsys.readouterr().out
    assert SECRET not in printed and "--storage-file" in printed


def test_percent_signs_are_escaped_for_systemd_and_cron(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "100%-results"
    schedule("act", "03:00", results, ["--device", "cpu"], install=True, environment=CPU)
    printed = capsys.readouterr().out
    service = (tmp_path / "config" / "systemd" / "user" / "autotune-act.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert "100%%-results" in exec_start and "100%-" not in exec_start.replace("%%", "")
    cron = next(line for line in printed.splitlines() if line.startswith("0 3 * * *"))
    assert "100\\%-results" in cron and "%" not in cron.replace("\\%", "")


# --- 11: a junk worker-study database, before the first probe -------------------------------------


def test_a_junk_study_database_fails_before_the_dataset_and_any_row(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "studies").mkdir(parents=True)
    (results / "studies" / "act.db").write_bytes(b"junk" * 99)
    append_rows(results / "runs.csv", RUN_COLUMNS, [run_row("a", 20)])
    before = snapshot(results)
    cfg = RunConfig(policy="act", device="cpu", precision="fp32", results=results, image_size=(48, 64))
    junk = r"studies/act.db is not a worker study autotune can open.*move it aside"
    with pytest.raises(UserError, match=junk), open_run(cfg, CPU):
        pass
    after = snapshot(results)
    assert after.pop(".autotune-act.lock") == b""  # the lock, released
    assert after == before
    assert not any((results / "datasets").iterdir())  # no dataset written for a run that cannot finish


# --- 12: the smaller ones -----------------------------------------------------------------------


def test_fleet_does_not_create_a_database_it_only_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.db"
    code, out, err = cli(capsys, "fleet", "--storage", f"sqlite:///{typo}")
    assert code == 2 and out == ""
    one_line(err, str(typo), "no database")
    assert not typo.exists()


def test_a_lerobot_newer_than_the_table_says_whose_flags_are_assumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        trainer = find_trainer(None, "99.0")
    assert trainer.version == "99.0"
    notes = [r.getMessage() for r in caplog.records if "99.0" in r.getMessage()]
    assert len(notes) == 1 and "assumed to be those of 0.7.0" in notes[0] and "--verify" in notes[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        find_trainer(None, "0.6.1")
    assert not caplog.records


def test_results_that_is_a_file_is_named_as_one(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("x")
    with pytest.raises(
        UserError, match=r"results folder .*results cannot be written: it is a file, not a folder"
    ):
        ensure_writable(blocker)
    profiles_file = tmp_path / "r2" / "profiles"
    profiles_file.parent.mkdir()
    profiles_file.write_text("x")
    with pytest.raises(
        UserError, match=r"folder .*r2/profiles cannot be written: it is a file, not a folder; move it aside"
    ):
        ensure_writable(tmp_path / "r2")
    assert blocker.read_text() == "x" and profiles_file.read_text() == "x"


def test_what_can_be_told_without_writing_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # A file above the results folder, and a study that is not one: each one line, nothing created.
    (tmp_path / "above").write_text("x")
    with pytest.raises(
        UserError, match=r"results folder .*above/results cannot be written: .*above is a file"
    ):
        check_results_unwritten(tmp_path / "above" / "results", "act", None)
    (tmp_path / "r" / "studies").mkdir(parents=True)
    (tmp_path / "r" / "studies" / "act.db").write_bytes(b"junk" * 99)
    with pytest.raises(UserError, match=r"act\.db.*not a worker study"):
        check_results_unwritten(tmp_path / "r", "act", None)
    assert sorted(p.name for p in (tmp_path / "r").rglob("*")) == ["act.db", "studies"]
    check_results_unwritten(tmp_path / "r", "act", "sqlite:///elsewhere.db")  # a shared storage: later
    (tmp_path / "r" / "studies" / "act.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    check_results_unwritten(tmp_path / "r", "act", None)  # a database: opened later, under the lock
    check_results_unwritten(tmp_path / "new", "act", None)  # nothing there yet: nothing to refuse
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--image-size", "1x1", "at least 8"),
        ("--image-size", "33x64", "even sides, e.g. 34x64"),
        ("--image-size", "100000x100000", "at most 4096"),
        ("--memory-limit", "1KiB", "below 64.00 MiB"),
    ],
)
def test_run_refuses_sizes_it_cannot_run_with_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, fragment: str
) -> None:
    code, out, err = cli(
        capsys, "run", "--policy", "act", "--device", "cpu", flag, value, "--results", str(tmp_path / "r")
    )
    assert code == 2 and out == ""
    one_line(err, f"argument {flag}", fragment)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match=flag):
        if flag == "--image-size":
            RunConfig(
                policy="act", device="cpu", precision="fp32", image_size=tuple(map(int, value.split("x")))
            )
        else:
            RunConfig(policy="act", device="cpu", precision="fp32", memory_limit_bytes=1024)
