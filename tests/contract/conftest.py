"""Contract-suite fixtures: every Ledger, ObjectStore and Notifier adapter runs the same tests.

The fixtures ``ledger``, ``objects`` and ``notifier`` are parametrised over the factories in
:data:`FACTORIES` (one test id per adapter, e.g. ``test_claim_once[sqlite]``).

**Adding an adapter** (e.g. the cloud engineer's ``dynamodb``, ``s3``, ``sns``): create a
module ``tests/contract/factories_<anything>.py`` that defines ``register(factories)``; this
conftest imports every such module at collection time and calls it::

    # tests/contract/factories_aws.py
    import pytest
    from tests.contract.harness import Factory, NotifierHarness

    def make_s3(request, tmp_path):
        endpoint = request.getfixturevalue("moto_server")     # any fixture is reachable
        …create a bucket…
        return S3Store.from_url("s3://bucket/prefix")

    def register(factories):
        factories["objects"]["s3"] = Factory(make_s3, marks=(pytest.mark.aws,))
        factories["ledger"]["dynamodb"] = Factory(make_dynamo, marks=(pytest.mark.aws,))
        factories["notifier"]["sns"] = Factory(make_sns_harness, marks=(pytest.mark.aws,))

A factory is ``make(request, tmp_path) -> adapter``; a ledger is closed after the test (if it
has ``close``). A notifier factory returns a :class:`NotifierHarness`: the notifier plus a
``received()`` function returning the message texts delivered so far, in order (console:
captured stderr; webhook: a local HTTP receiver's bodies; SNS: an SQS queue subscribed on moto).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdanet.ledgers.sqlite import SqliteLedger
from lambdanet.notifiers.console import PREFIX, ConsoleNotifier
from lambdanet.objects.folder import FolderStore
from tests.contract.harness import Factory, NotifierHarness


# ---- the embedded adapters -------------------------------------------------------------------
def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> SqliteLedger:
    return SqliteLedger.from_url(f"sqlite:///{tmp_path}/ledger/ledger.db")


def _sqlite_memory(request: pytest.FixtureRequest, tmp_path: Path) -> SqliteLedger:
    return SqliteLedger.from_url("sqlite:///:memory:")


def _folder(request: pytest.FixtureRequest, tmp_path: Path) -> FolderStore:
    return FolderStore.from_url(str(tmp_path / "objects"))


def _file_url(request: pytest.FixtureRequest, tmp_path: Path) -> FolderStore:
    return FolderStore.from_url(f"file://{tmp_path / 'objects-url'}")


def _console(request: pytest.FixtureRequest, tmp_path: Path) -> NotifierHarness:
    capsys: pytest.CaptureFixture[str] = request.getfixturevalue("capsys")
    seen: list[str] = []

    def received() -> list[str]:
        err = capsys.readouterr().err
        seen.extend(line[len(PREFIX):] for line in err.splitlines() if line.startswith(PREFIX))
        return list(seen)

    return NotifierHarness(ConsoleNotifier.from_url("console://stderr"), received)


FACTORIES: dict[str, dict[str, Factory]] = {
    "ledger": {"sqlite": Factory(_sqlite_file), "sqlite-memory": Factory(_sqlite_memory)},
    "objects": {"folder": Factory(_folder), "file-url": Factory(_file_url)},
    "notifier": {"console": Factory(_console)},
}


def _load_plugins() -> None:
    for path in sorted(Path(__file__).parent.glob("factories_*.py")):
        module = importlib.import_module(f"tests.contract.{path.stem}")
        module.register(FACTORIES)


_load_plugins()


def _params(kind: str) -> list[Any]:
    return [pytest.param(name, marks=list(f.marks), id=name) for name, f in FACTORIES[kind].items()]


@pytest.fixture(params=_params("ledger"))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    adapter = FACTORIES["ledger"][request.param].make(request, tmp_path)
    yield adapter
    close = getattr(adapter, "close", None)
    if close is not None:
        close()


@pytest.fixture(params=_params("objects"))
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return FACTORIES["objects"][request.param].make(request, tmp_path)


@pytest.fixture(params=_params("notifier"))
def notifier(request: pytest.FixtureRequest, tmp_path: Path) -> NotifierHarness:
    harness = FACTORIES["notifier"][request.param].make(request, tmp_path)
    assert isinstance(harness, NotifierHarness), "a notifier factory returns a NotifierHarness"
    return harness
