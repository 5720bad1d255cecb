"""Fixtures shared by the end-to-end modules."""

from tests.e2e.shared import act_as_tuned, act_run, datasets  # noqa: F401
