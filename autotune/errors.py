"""Errors a user can cause or fix; the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A problem with the input or the machine that the user can fix; printed as one line."""

    exit_code = 2


class ProbeError(Exception):
    """A probe failed for a reason other than running out of memory; carries the child's message."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (children killed, a failed row), exit 143."""
