"""The lease fences a replaced driver's commit: a driver taken over WHILE its round ran (its workers
are done, it has not committed yet) cannot commit that round — its commit raises StaleDriver —
and every epoch row after the takeover comes from the new owner. Real parts: the DynamoDB ledger
and the S3 object store on moto's server, the local executor's worker threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.engine.session import DriverIdentity, RunSession
from lambdanet.errors import StaleDriver
from lambdanet.executors.local import LocalExecutor
from tests.e2e.engine_support import RecordingSink, config, open_services, small_data

pytestmark = pytest.mark.aws

CFG = config(epochs=6, batch_size=64, optimizer="adam", learning_rate=0.01)


Committed = RecordingSink


class TakeOverWhenRoundTwoReturns:
    """The local executor, except that when round 2's worker calls have all returned — the round
    is trained, its driver has not committed it — another invocation of the same execution (a
    replay) takes the run over."""

    name = "local"
    in_process = True

    def __init__(self, take_over: Any) -> None:
        self.inner = LocalExecutor()
        self.take_over = take_over
        self.new: RunSession | None = None

    def run(self, fn: Any, specs: list[dict[str, Any]], timeout_s: float, on_failure: Any = None,
            liveness: Any = None) -> Any:
        outcomes = self.inner.run(fn, specs, timeout_s, on_failure=on_failure, liveness=liveness)
        if int(specs[0]["round"]) == 2 and self.new is None:
            assert all(o.ok for o in outcomes)
            self.new = self.take_over()
        return outcomes

    def close(self) -> None:
        pass


def test_a_driver_replaced_while_its_round_ran_cannot_commit_it(cloud: dict[str, Any], tmp_path: Path) -> None:
    data = small_data(tmp_path)
    services = open_services()
    try:
        run_id = Driver(services).start(TrainRequest(data=str(data), config=CFG, model_name="fence",
                                                     epochs_per_round=2, store_url="memory://"))
        old_commits, new_commits = Committed(), Committed()
        executor = TakeOverWhenRoundTwoReturns(lambda: Driver(services, progress=new_commits).open_session(
            run_id, DriverIdentity.invocation("exec-1")))
        old = Driver(services, progress=old_commits, executor=executor).open_session(
            run_id, DriverIdentity.invocation("exec-1"))
        assert old.next_round().epochs_done == 2
        with pytest.raises(StaleDriver, match="lost its lease"):
            old.next_round()  # round 2 trained to the end, then the commit is refused
        assert executor.new is not None, "nobody took the run over: the test proved nothing"
        new = executor.new
        assert old.stale and old_commits.epochs == [1, 2]  # the old driver committed nothing of round 2
        assert [r.epoch for r in services.ledger.epochs(run_id)] == [1, 2]
        old.close()
        while not new.next_round().finished:
            pass
        new.finish()
        new.close()
        assert [r.epoch for r in services.ledger.epochs(run_id)] == list(range(1, 7))
        assert new_commits.epochs == [3, 4, 5, 6]  # every row after the takeover is the new owner's
        assert services.ledger.get_run(run_id).status == "completed"
    finally:
        services.close()
