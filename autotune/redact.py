"""Passwords kept out of everything autotune prints, logs or writes.

A storage URL (``postgresql://user:PASSWORD@host/db``) is shown with its password as ``***``, also
when it does not parse (``postgresql:/user:PASSWORD@host/db`` has no ``//``, and SQLAlchemy finds no
password in it): credentials are masked by hand, and a message that quotes the password (a
driver's, an exception's) has it replaced too. Every log record passes through :func:`hide_secrets`
too (:func:`redact_logs`, which ``autotune.cli`` installs), with the storage URL the command uses
remembered (:func:`remember`): a message of torch's, SQLAlchemy's or a driver's that quotes it is
masked before it reaches stderr or a nightly log.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

# A URL's credentials, wherever it sits in a text: scheme://user:PASSWORD@ (or scheme:/user:PASSWORD@),
# and password=... in a query string.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*:/*[^\s:/@'\"]*:)(?P<password>[^\s'\"]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s'\"]*", re.IGNORECASE)
HIDDEN = "***"
_remembered: list[str] = []  # the storage URLs this process uses (remember)


def _password(url: str) -> str | None:
    """The password of ``url`` as SQLAlchemy reads it, None if it has none or does not parse."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).password
    except Exception:
        return None


def hide_secrets(text: str, url: str | None = None) -> str:
    """``text`` with every password in it replaced by ***: those of URLs in it (parsed or not), and
    the password of ``url`` wherever it appears (a driver's message may quote it)."""
    out = _CREDENTIALS.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
    out = _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}", out)
    for known in dict.fromkeys([*([url] if url is not None else []), *_remembered]):
        for secret in _secrets(known):
            for form in {secret, quote(secret, safe="")}:
                out = out.replace(form, HIDDEN)
    return out


def _secrets(url: str) -> set[str]:
    """The password of ``url`` in every form a parser finds it (3 characters or more: shorter ones
    would mask half of any text)."""
    found = _CREDENTIALS.search(url)
    query = re.search(r"[?&](?:password|passwd|pwd)=([^&\s]*)", url, re.IGNORECASE)
    candidates = {_password(url), found["password"] if found else None, query[1] if query else None}
    return {s for s in candidates if s and len(s) >= 3}


def remember(url: str) -> None:
    """Mask the password of ``url`` wherever it shows in this process's messages from now on."""
    if url not in _remembered and _secrets(url):
        _remembered.append(url)


class _Record(logging.LogRecord):
    def getMessage(self) -> str:  # noqa: N802 (logging's name)
        return hide_secrets(super().getMessage())


def redact_logs() -> None:
    """Pass every log record, of every library, through :func:`hide_secrets` (the record factory
    is process-wide, so a handler that tqdm or a test swaps in masks too)."""
    if logging.getLogRecordFactory() is not _Record:
        logging.setLogRecordFactory(_Record)


def shown_url(url: str) -> str:
    """``url`` with its password hidden; a URL that does not parse is masked by hand."""
    import sqlalchemy as sa

    try:
        text = sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        text = url
    return hide_secrets(text, url)


def has_secret(url: str) -> bool:
    """Whether ``url`` carries a password (which must stay out of files others can read)."""
    return hide_secrets(url, url) != url
