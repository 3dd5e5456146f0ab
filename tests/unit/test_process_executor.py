"""The process executor survives a worker that dies before it has read its spec (a kill -9
right after spawn): the call is a failed outcome, the driver's round is retried — never a
BrokenPipeError out of ``run``."""

from __future__ import annotations

import shutil

from lambdanet.executors.probe import echo
from lambdanet.executors.process import ProcessExecutor


def test_worker_gone_before_reading_its_spec_is_a_failed_call() -> None:
    # /bin/true exits at once without reading stdin; a spec larger than the pipe buffer (64 KiB)
    # makes the write hit the closed pipe.
    ex = ProcessExecutor.from_url("process", python=shutil.which("true"))
    big = {"worker": 0, "padding": "x" * 300_000}
    outcomes = ex.run(echo, [big, {**big, "worker": 1}], timeout_s=30)
    assert [o.worker for o in outcomes] == [0, 1]
    assert [o.ok for o in outcomes] == [False, False]
    assert all(o.error == "exit code 0" for o in outcomes), [o.error for o in outcomes]
