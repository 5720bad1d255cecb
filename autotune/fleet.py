"""A fleet on one shared database (``--storage URL``): what each machine should run, and which regressed.

Any SQLAlchemy URL Optuna accepts works (``postgresql://user:password@host/db`` for a lab's
server; ``sqlite:///path`` for one machine). The database holds the worker studies (Optuna's own
tables; a study's name carries the conditions and the machine's fingerprint, so only machines
with the same fingerprint share one) and one row per run in :data:`TABLE`: the run's summary, the
machine it ran on, any regression the nightly check flagged, and the profile itself, so that
nothing lives only on a machine's disk. ``autotune fleet --storage URL`` reads the newest row per
machine and policy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.errors import UserError
from autotune.redact import hide_secrets, remember, shown_url

TABLE = "autotune_runs"
STORAGE_ENV = "AUTOTUNE_STORAGE"  # the storage URL, when neither --storage nor --storage-file is given
CONNECT_TIMEOUT_S = 10
# autotune fleet's columns, in order.
FLEET_COLUMNS = [
    "machine",
    "policy",
    "gpu_name",
    "driver_version",
    "torch_version",
    "batch_size",
    "num_workers",
    "prefetch_factor",
    "samples_per_s",
    "last_tuned",
    "last_run",
    "last_status",
    "regression",
]


def shown(url: str) -> str:
    """``url`` with its password hidden, for messages, logs and files (autotune.redact)."""
    return shown_url(url)


def read_storage_file(path: Path) -> str:
    """The storage URL in the file ``path`` (its first line), which only its owner may read."""
    path = path.expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"--storage-file {path}: no such file; write the URL into it (chmod 600)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UserError(
            f"--storage-file {path} cannot be read ({reason}); fix it, or pass --storage"
        ) from None
    if mode & 0o077:
        raise UserError(
            f"--storage-file {path} can be read by others (mode {mode & 0o777:o}); it holds a password: "
            f"chmod 600 {path}"
        )
    url = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not url:
        raise UserError(f"--storage-file {path} is empty; write the storage URL into it")
    return url


def resolve(url: str | None, file: Path | None) -> str | None:
    """The storage URL a command uses: ``--storage``, else ``--storage-file``, else the environment's
    ``AUTOTUNE_STORAGE``; None for none (SQLite under the results folder)."""
    if url is not None and file is not None:
        raise UserError("--storage and --storage-file name the same thing; pass one of them")
    if file is not None:
        found: str | None = read_storage_file(file)
    elif url is not None:
        if not url.strip():
            raise UserError(
                "--storage is empty; pass a database URL, e.g. postgresql://USER:PASSWORD@HOST/DB"
            )
        found = url.strip()
    else:
        found = os.environ.get(STORAGE_ENV, "").strip() or None
    if found is not None:
        remember(found)  # its password masked in every message of this process from now on
    return found


def _not_a_url(url: str) -> UserError:
    return UserError(
        f"--storage {shown(url)} is not a database URL: use postgresql://USER:PASSWORD@HOST[:PORT]/DB "
        "(or sqlite:///PATH)"
    )


def parse(url: str) -> Any:
    """``url`` parsed by SQLAlchemy, its port and driver checked; one line (password hidden) if not."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
        parsed.port  # noqa: B018 (a port that is not a number fails here, or in make_url)
        parsed.get_backend_name()
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise _not_a_url(url) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise UserError(f"--storage {shown(url)}: port {parsed.port} is not one (1 to 65535)")
    try:
        parsed.get_dialect()
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise UserError(
            f"--storage {shown(url)}: its database driver is not installed ({hide_secrets(str(exc), url)}); "
            "for PostgreSQL: pip install 'autotune[fleet]'"
        ) from None
    return parsed


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    parsed = parse(url)
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        return sa.create_engine(parsed, connect_args=args, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ImportError, sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise UserError(
            f"--storage {shown(url)}: cannot be used ({hide_secrets(str(exc), url).splitlines()[0][:160]}); "
            "for PostgreSQL: pip install 'autotune[fleet]'"
        ) from None


def check_exists(url: str) -> None:
    """For a command that only reads: a SQLite database that is not there is one line (SQLAlchemy
    would create an empty one)."""
    parsed = parse(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).expanduser().is_file():
        raise UserError(
            f"--storage {shown(url)}: no database at {database}; check the path (autotune fleet only reads: "
            "the runs create it)"
        )


def _table(metadata: Any) -> Any:
    import sqlalchemy as sa

    return sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("machine", sa.String(255), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # ok, checked or failed
        sa.Column("finished_at", sa.String(40), nullable=False),  # ISO 8601, UTC
        sa.Column("gpu_name", sa.String(255)),
        sa.Column("gpu_uuid", sa.String(255)),
        sa.Column("driver_version", sa.String(64)),
        sa.Column("cuda_driver_version", sa.String(64)),
        sa.Column("torch_version", sa.String(64)),
        sa.Column("lerobot_version", sa.String(64)),
        sa.Column("batch_size", sa.Integer),
        sa.Column("max_batch_size", sa.Integer),
        sa.Column("num_workers", sa.Integer),
        sa.Column("prefetch_factor", sa.Integer),
        sa.Column("samples_per_s", sa.Float),
        sa.Column("regression", sa.Text),  # the alarm's regressions, "; "-separated; "" for none
        sa.Column("profile", sa.Text),  # the profile as JSON (the one checked, for a check)
    )


def _unreachable(url: str, exc: BaseException) -> UserError:
    reason = hide_secrets(str(getattr(exc, "orig", None) or exc), url).strip().splitlines()
    why = reason[0][:200] if reason else type(exc).__name__
    if url.strip().lower().startswith("sqlite"):
        return UserError(
            f"--storage {shown(url)} cannot be opened as a database ({why}); check the path, or move "
            "the file aside"
        )
    return UserError(
        f"--storage {shown(url)} cannot be reached or authenticated ({why}); "
        "check the host, the database, the user and the password"
    )


def check(url: str) -> None:
    """Connect once and make sure the runs table exists: one line, before any probe, if not."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        metadata = sa.MetaData()
        _table(metadata)
        try:
            metadata.create_all(engine, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another machine created it at the same moment.
            metadata.create_all(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError as exc:
        raise _unreachable(url, exc) from None
    finally:
        engine.dispose()


def machine() -> str:
    """This machine's name in the fleet: ``AUTOTUNE_MACHINE``, else the host name."""
    return os.environ.get("AUTOTUNE_MACHINE", "").strip() or socket.gethostname()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def record(url: str, row: dict[str, Any], profile: dict[str, Any] | None, regressions: Sequence[str]) -> None:
    """Add one run's row (its runs.csv row, its profile, its regressions) to the shared table."""
    import sqlalchemy as sa

    engine = _engine(url)
    metadata = sa.MetaData()
    table = _table(metadata)
    values = {
        "run_id": str(row.get("run_id", "")),
        "machine": machine(),
        "policy": str(row.get("policy", "")),
        "status": str(row.get("status", "")),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu_name": str(row.get("gpu_name") or ""),
        "gpu_uuid": str(row.get("gpu_uuid") or ""),
        "driver_version": str(row.get("driver_version") or ""),
        "cuda_driver_version": str(row.get("cuda_driver_version") or ""),
        "torch_version": str(row.get("torch_version") or ""),
        "lerobot_version": str(row.get("lerobot_version") or ""),
        "batch_size": _int(row.get("batch_size")),
        "max_batch_size": _int(row.get("max_batch_size")),
        "num_workers": _int(row.get("num_workers")),
        "prefetch_factor": _int(row.get("prefetch_factor")),
        "samples_per_s": _float(row.get("samples_per_s")),
        "regression": "; ".join(regressions),
        "profile": json.dumps(profile) if profile is not None else None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(**values))
    except sa.exc.SQLAlchemyError as exc:
        raise _unreachable(url, exc) from None
    finally:
        engine.dispose()


def runs(url: str) -> pd.DataFrame:
    """Every row of the shared table, oldest first."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return pd.DataFrame(columns=[c.name for c in _table(sa.MetaData()).columns])
            return pd.read_sql(sa.text(f"SELECT * FROM {TABLE} ORDER BY id"), conn)
    except sa.exc.SQLAlchemyError as exc:
        raise _unreachable(url, exc) from None
    finally:
        engine.dispose()


def fleet(url: str) -> pd.DataFrame:
    """One row per machine and policy: its newest answer (the newest run that tuned or checked),
    when it was last tuned, how its newest run ended and the regression that run flagged."""
    every = runs(url)
    if every.empty:
        return pd.DataFrame(columns=FLEET_COLUMNS)
    rows = []
    for (machine, policy), group in every.groupby(["machine", "policy"], sort=True):
        answered = group[group.status.isin(["ok", "checked"])]
        tuned = group[group.status == "ok"]
        newest = group.iloc[-1]
        answer = answered.iloc[-1] if not answered.empty else newest
        rows.append(
            {
                "machine": machine,
                "policy": policy,
                "gpu_name": answer.gpu_name or "CPU",
                "driver_version": answer.driver_version,
                "torch_version": answer.torch_version,
                "batch_size": answer.batch_size,
                "num_workers": answer.num_workers,
                "prefetch_factor": answer.prefetch_factor,
                "samples_per_s": answer.samples_per_s,
                "last_tuned": tuned.iloc[-1].finished_at if not tuned.empty else "",
                "last_run": newest.finished_at,
                "last_status": newest.status,
                "regression": newest.regression or "",
            }
        )
    return pd.DataFrame(rows, columns=FLEET_COLUMNS)
