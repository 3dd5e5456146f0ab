"""The study journal in DynamoDB (``--storage dynamodb://…``), against the moto server over HTTP:
log numbers dense and agreed by concurrent writers, an Optuna study shared by two drivers, JSON
only (a pickle in the table is refused, never loaded), and a real ``lambdanet tune`` over it."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path
from typing import Any

import boto3
import optuna
import pytest

from lambdanet.adapters import journal_exists, open_journal
from lambdanet.errors import DataError, StoreUnavailable
from lambdanet.journals.dynamodb import DynamoJournal, study_key
from tests.e2e.test_tune import check_staging, check_trial_runs, cli, last_json, tune_args

pytestmark = pytest.mark.aws


def table_items(endpoint: str, table: str, study: str) -> list[dict[str, Any]]:
    """The study's items as DynamoDB holds them, read with a plain boto3 query (not the backend)."""
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    items: list[dict[str, Any]] = []
    args: dict[str, Any] = {"TableName": table, "KeyConditionExpression": "pk = :pk",
                            "ExpressionAttributeValues": {":pk": {"S": study_key(study)}}, "ConsistentRead": True}
    while True:
        page = client.query(**args)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_concurrent_writers_get_dense_log_numbers_in_their_order(moto_server: str) -> None:
    url = "dynamodb://journal-writers?region=us-east-1"
    writers = [DynamoJournal.from_url(url, "race") for _ in range(3)]
    barrier = threading.Barrier(3)

    def write(w: int) -> None:
        barrier.wait()
        for i in range(8):
            writers[w].append_logs([{"writer": w, "i": i}])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = table_items(moto_server, "journal-writers", "race")
    assert sorted(int(it["sk"]["N"]) for it in items) == list(range(24))  # dense: no gap, none lost
    logs = list(DynamoJournal.from_url(url, "race").read_logs(0))
    assert len(logs) == 24
    for w in range(3):  # each writer's logs in the order it wrote them
        assert [log["i"] for log in logs if log["writer"] == w] == list(range(8))
    assert list(DynamoJournal.from_url(url, "race").read_logs(20)) == logs[20:]
    assert journal_exists(url, "race", Path("/nonexistent")) and not journal_exists(url, "none", Path("/x"))


def test_an_optuna_study_shared_by_two_drivers(moto_server: str) -> None:
    url = "dynamodb://journal-study?region=us-east-1"
    first = optuna.create_study(study_name="shared", storage=optuna.storages.JournalStorage(
        open_journal(url, "shared", Path("/unused"))))
    second = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        open_journal(url, "shared", Path("/unused"))))

    def optimize(study: optuna.Study) -> None:
        study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.25) ** 2, n_trials=5)

    threads = [threading.Thread(target=optimize, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replayed = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        DynamoJournal.from_url(url, "shared")))
    assert sorted(t.number for t in replayed.trials) == list(range(10))  # none counted twice
    assert all(t.value == pytest.approx((t.params["x"] - 0.25) ** 2) for t in replayed.trials)
    assert all(isinstance(json.loads(it["log"]["S"]), dict)
               for it in table_items(moto_server, "journal-study", "shared"))


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "unpickled"))


def test_a_pickle_in_the_table_is_refused_never_loaded(moto_server: str, tmp_path: Path) -> None:
    url = "dynamodb://journal-pickle?region=us-east-1"
    journal = DynamoJournal.from_url(url, "evil")
    journal.append_logs([{"op_code": 0}])
    canary = tmp_path / "canary"
    client = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    client.put_item(TableName="journal-pickle", Item={"pk": {"S": study_key("evil")}, "sk": {"N": "1"},
                                                       "log": {"B": pickle.dumps(_Canary(canary))}})
    with pytest.raises(DataError, match="not JSON"):
        list(journal.read_logs(0))
    assert not canary.exists()


def test_a_dead_endpoint_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="study storage dynamodb://dead"):
        DynamoJournal("dead", "s", region="us-east-1", endpoint_url="http://127.0.0.1:1")


def test_lambdanet_tune_with_its_study_in_dynamodb(moto_server: str, home: Path, tmp_path: Path) -> None:
    from tests.e2e.test_tune import BASE, SPACE, tiny_h5

    files = {"data": tiny_h5(tmp_path / "tiny" / "datasets.h5"), "base": tmp_path / "base.json",
             "space": tmp_path / "space.json"}
    files["base"].write_text(json.dumps(BASE))
    files["space"].write_text(json.dumps(SPACE))
    storage = "dynamodb://lambdanet-studies?region=us-east-1"
    res = cli(home, *tune_args(files, "dyn", "--trials", "3", "--pruner", "none", "--storage", storage))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    assert out["trials"] == out["completed"] == 3 and out["storage"] == storage
    check_trial_runs(home, "dyn", 3, "local")
    check_staging(home, out)
    items = table_items(moto_server, "lambdanet-studies", "dyn")
    assert sorted(int(it["sk"]["N"]) for it in items) == list(range(len(items)))
    assert len(items) > 3 and all(isinstance(json.loads(it["log"]["S"]), dict) for it in items)
    assert not (home / "studies" / "dyn.journal").exists()  # the study lives in DynamoDB
