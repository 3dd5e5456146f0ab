"""Ports: the small interfaces the core depends on. Adapters (``stores/``, ``executors/``,
``ledgers/``, ``objects/``, ``notifiers/``) implement them; the core never imports an adapter,
it asks :mod:`lambdanet.adapters` to open one from a URL."""

from lambdanet.ports.executor import BudgetedExecutor, CallOutcome, Executor, WorkerFunction
from lambdanet.ports.ledger import CallRow, EpochRow, Lease, Ledger, RunRecord
from lambdanet.ports.notifier import Notifier
from lambdanet.ports.objects import ObjectInfo, ObjectStore
from lambdanet.ports.tensorstore import TensorStore

__all__ = [
    "BudgetedExecutor",
    "CallOutcome",
    "CallRow",
    "EpochRow",
    "Executor",
    "Lease",
    "Ledger",
    "Notifier",
    "ObjectInfo",
    "ObjectStore",
    "RunRecord",
    "TensorStore",
    "WorkerFunction",
]
