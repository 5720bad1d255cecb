"""Fixtures shared by the end-to-end modules."""

from tests.e2e.shared import act_as_tuned, act_run  # noqa: F401
