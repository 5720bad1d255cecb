"""Settings for the whole suite.

The suite runs on two pytest-xdist workers (pyproject's addopts), so the 2-core machine stays busy
while one test waits on a child. Each probe child, tuner and lerobot-train the tests start then
gets one intra-op thread: two of them share the two cores without each spinning two threads.

Tests that read one expensive fixture run on one worker, in their order, so it is made once:
:data:`TOGETHER` names their modules. A module that uses ``act_run`` (tests/e2e/shared.py) joins
that group here.
"""

from __future__ import annotations

import os

import pytest

TOGETHER = {
    "tests/e2e/test_run.py": "act_run",  # the session's tuned ACT, and what later tests do to it
    "tests/e2e/test_verify.py": "act_run",
    "tests/e2e/test_train.py": "act_run",
    "tests/e2e/test_fleet.py": "fleet",  # one PostgreSQL cluster, the machines that tuned into it
    "tests/probes/test_distributed.py": "distributed",  # one process's probe, compared with two jobs
}

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201 (xdist's own types)
    """Every test is a unit of its own, except the modules of a group in :data:`TOGETHER`.

    (xdist's ``--dist loadgroup`` marks do not hold under pytest 9.2, which no longer reads the node
    id xdist rewrites; this is the same schedule, keyed by module.) The largest unit, the tuned
    ACT's, is handed out first.
    """
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return TOGETHER.get(nodeid.split("::", 1)[0], nodeid)

    return Together(config, log)
