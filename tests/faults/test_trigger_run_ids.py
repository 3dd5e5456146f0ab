"""A triggered run that fails inside the driver is reported under the id the ledger has.

Before the fix the trigger made up its own run id, the driver another one, and a failure after
the driver had created its run was reported (and claimed) under the trigger's id — a run that
does not exist in the ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CATVNONCAT, RedisServer

pytestmark = pytest.mark.redis

PARAMS = {"epochs": 6, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 3, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 209}


class StopRedisAfterFirstRound:
    """A progress sink that kills the run's redis-server once the first round is committed."""

    def __init__(self, server: RedisServer) -> None:
        self.server, self.stopped = server, False

    def start(self, total_epochs: int, done_epochs: int) -> None:
        pass

    def update(self, epoch: int, cost: float) -> None:
        if epoch == 2 and not self.stopped:
            self.stopped = True
            self.server.stop()

    def finish(self) -> None:
        pass


def test_a_run_failing_inside_the_driver_is_reported_under_its_ledger_id(home: Path, tmp_path: Path) -> None:
    from lambdanet import adapters
    from lambdanet.functions.upload_trigger import UploadTrigger
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    bucket = tmp_path / "bucket"
    (bucket / "training_input").mkdir(parents=True)
    (bucket / "training_input" / "parameters.json").write_text(json.dumps(PARAMS))
    shutil.copy(CATVNONCAT / "datasets.h5", bucket / "training_input" / "datasets.h5")
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    sink = StopRedisAfterFirstRound(server)
    services = Services.open(Settings.from_env())
    try:
        trigger = UploadTrigger(services, adapters.open_objects(str(bucket)), store_url=server.url,
                                epochs_per_round=2, progress=sink)
        [result] = trigger.run_once()
        assert sink.stopped, "the store never went away: the test proved nothing"
        assert result.status == "failed" and result.run_id is not None
        run = services.ledger.get_run(result.run_id)  # RunNotFound before the fix
        assert run.status == "failed" and "round 2" in str(run.error)
        assert [r.run_id for r in services.ledger.list_runs()] == [result.run_id]
        again: Any = trigger.run_once()  # the upload is claimed by that same, real run
        assert again == []
        assert services.ledger.claimed_by(trigger.claim_key("training_input/datasets.h5",
                                                            result.version)) == result.run_id
    finally:
        services.close()
        server.stop()
