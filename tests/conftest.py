"""Under pytest-xdist (``-n 2 --dist loadgroup``, as the README's test command runs): each test file
stays on one worker, so its module fixtures run once, and the files that read the session's tuned
ACT (tests/e2e/shared.py) share one worker, so it is tuned once."""

from __future__ import annotations

import pytest

SHARED_ACT = {"test_run.py", "test_verify.py", "test_train.py"}  # tests/e2e, reading act_run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            path = item.nodeid.split("::")[0]
            group = "act" if path.startswith("tests/e2e/") and path.rsplit("/", 1)[-1] in SHARED_ACT else path
            item.add_marker(pytest.mark.xdist_group(group))
