"""Passwords stay out of every log line: the CLI masks every library's log records, and the storage
URL a command uses is remembered, so a message that quotes its password bare is masked too."""

from __future__ import annotations

import logging

import pytest

from autotune import fleet
from autotune.redact import HIDDEN, hide_secrets, redact_logs, shown_url


def test_a_library_message_quoting_the_storage_password_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    url = fleet.resolve("postgresql://lab:hunter2-secret@db.lab:5432/autotune", None)
    assert url is not None
    redact_logs()
    with caplog.at_level(logging.WARNING):
        # a driver's message that quotes the password alone, outside any URL
        logging.getLogger("sqlalchemy.pool").warning(
            "authentication failed for password %r", "hunter2-secret"
        )
        logging.getLogger("psycopg").warning("storage %s is slow", url)
    assert "hunter2-secret" not in caplog.text
    assert caplog.text.count(HIDDEN) == 2


def test_a_url_that_does_not_parse_is_masked_by_hand() -> None:
    text = shown_url("postgresql:/lab:hunter2-secret@127.0.0.1/db")  # one slash: SQLAlchemy finds no password
    assert "hunter2-secret" not in text and HIDDEN in text
    assert "hunter2-secret" not in hide_secrets("psql -d 'postgresql://lab:hunter2-secret@[::1'")
