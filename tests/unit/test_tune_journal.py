"""The study journals: JSON logs in a file under LAMBDANET_HOME or in a Redis list, read from an offset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from lambdanet.adapters import journal_exists, open_journal
from lambdanet.errors import ConfigError, DataError, StoreUnavailable
from lambdanet.journals import decode_entry
from lambdanet.journals.redis import RedisJournal


@pytest.mark.redis
def test_redis_journal_appends_and_reads_from_an_offset(redis_server: Any) -> None:
    j = RedisJournal(redis_server.url, "unit-offsets")
    j.append_logs([{"op_code": 0, "n": 1}, {"op_code": 1, "n": 2}])
    j.append_logs([{"op_code": 2, "n": 3}])
    assert [e["n"] for e in j.read_logs(0)] == [1, 2, 3]
    assert [e["n"] for e in j.read_logs(2)] == [3]
    assert list(j.read_logs(3)) == []
    assert journal_exists(redis_server.url, "unit-offsets", Path("/nonexistent"))
    assert not journal_exists(redis_server.url, "unit-none", Path("/nonexistent"))
    j._r.delete(j.key)
    j.close()


def test_file_journal_is_a_shared_optuna_storage(tmp_path: Path) -> None:
    backend = open_journal("file", "unit", tmp_path)
    study = optuna.create_study(study_name="unit", storage=optuna.storages.JournalStorage(backend))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert (tmp_path / "studies" / "unit.journal").exists() and journal_exists("file", "unit", tmp_path)
    other = optuna.load_study(study_name="unit",
                              storage=optuna.storages.JournalStorage(open_journal("file", "unit", tmp_path)))
    assert len(other.trials) == 3


def test_bad_storage_names_and_entries() -> None:
    with pytest.raises(ConfigError, match="study storage"):
        open_journal("s3://bucket/x", "s", Path("/tmp"))
    with pytest.raises(ConfigError, match="invalid study name"):
        open_journal("file", "../escape", Path("/tmp"))
    with pytest.raises(ConfigError, match="no study 'absent'"):
        open_journal("file", "absent", Path("/nonexistent-home"), create=False)
    with pytest.raises(DataError, match="not JSON"):
        decode_entry(b"\x80\x04K\x01.", "k[0]")
    with pytest.raises(DataError, match="not a JSON object"):
        decode_entry(b"[1, 2]", "k[1]")


def test_a_dead_redis_is_store_unavailable() -> None:
    j = RedisJournal("redis://127.0.0.1:1/0", "dead")
    with pytest.raises(StoreUnavailable, match="study storage"):
        list(j.read_logs(0))
