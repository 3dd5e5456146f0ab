"""The one explicit registry of adapters, and the functions that open them from URLs.

Every adapter class has a ``from_url(url: str)`` classmethod. The scheme of the URL picks the
class from :data:`ADAPTERS`; an unknown scheme is an error that lists the known ones, and
nothing is ever chosen implicitly (no silent cloud default). Adapter modules import their
vendor library (redis, boto3, lithops, …) at module level; a missing one becomes
:class:`MissingExtra` naming the ``pip install 'lambdanet[extra]'`` to run.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from lambdanet.errors import MissingExtra, UnknownScheme, URLError
from lambdanet.ports import Executor, Ledger, Notifier, ObjectStore, TensorStore

ADAPTERS: dict[str, dict[str, str]] = {
    "store": {
        "memory": "lambdanet.stores.memory:MemoryStore",
        "redis": "lambdanet.stores.redis:RedisStore",
        "rediss": "lambdanet.stores.redis:RedisStore",
    },
    "executor": {
        "local": "lambdanet.executors.local:LocalExecutor",
        "process": "lambdanet.executors.process:ProcessExecutor",
        "lithops": "lambdanet.executors.lithops:LithopsExecutor",
    },
    "ledger": {
        "sqlite": "lambdanet.ledgers.sqlite:SqliteLedger",
        "dynamodb": "lambdanet.ledgers.dynamodb:DynamoLedger",
    },
    "objects": {
        "file": "lambdanet.objects.folder:FolderStore",
        "s3": "lambdanet.objects.s3:S3Store",
    },
    "notifier": {
        "console": "lambdanet.notifiers.console:ConsoleNotifier",
        "http": "lambdanet.notifiers.webhook:WebhookNotifier",
        "https": "lambdanet.notifiers.webhook:WebhookNotifier",
        "sns": "lambdanet.notifiers.sns:SnsNotifier",
    },
}

# vendor module -> the extra that installs it
EXTRAS: dict[str, str] = {
    "redis": "redis",
    "boto3": "aws",
    "botocore": "aws",
    "s3fs": "aws",
    "lithops": "lithops",
    "torch": "torch",
    "fastapi": "serve",
    "uvicorn": "serve",
    "mangum": "serve",
    "httpx": "serve",
}


def scheme_of(url: str) -> str:
    """``redis://h:1/0`` -> ``redis``; a bare word (``local``) is its own scheme; a path is ``file``."""
    if "://" not in url:
        if url.startswith(("/", ".", "~")) or "/" in url:
            return "file"
        return url.strip().lower()
    return urlsplit(url).scheme.lower()


def load_class(kind: str, scheme: str) -> Any:
    """Import and return the adapter class registered for ``scheme`` under ``kind``."""
    table = ADAPTERS[kind]
    if scheme not in table:
        known = ", ".join(f"{s}://" if kind != "executor" else s for s in sorted(table))
        raise UnknownScheme(f"unknown {kind} scheme '{scheme}' (known: {known})")
    module_name, _, class_name = table[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS:
            raise MissingExtra(
                f"the {scheme} {kind} needs the '{missing}' package: "
                f"pip install 'lambdanet[{EXTRAS[missing]}]'"
            ) from exc
        raise
    return getattr(module, class_name)


def _open(kind: str, url: str) -> Any:
    if not url or not url.strip():
        raise URLError(f"empty {kind} URL")
    return load_class(kind, scheme_of(url)).from_url(url)


def open_store(url: str) -> TensorStore:
    return _open("store", url)  # type: ignore[no-any-return]


def open_executor(url: str, **options: Any) -> Executor:
    cls = load_class("executor", scheme_of(url))
    return cls.from_url(url, **options)  # type: ignore[no-any-return]


def open_ledger(url: str) -> Ledger:
    return _open("ledger", url)  # type: ignore[no-any-return]


def open_objects(url: str) -> ObjectStore:
    return _open("objects", url)  # type: ignore[no-any-return]


def open_notifier(url: str) -> Notifier:
    return _open("notifier", url)  # type: ignore[no-any-return]


SECRET_QUERY_KEYS = frozenset({"password", "passwd", "secret", "token", "aws_secret_access_key", "api_key"})


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs, the ledger and reports): the
    ``user:password@`` part and query parameters such as ``?password=…`` (redis-py accepts both)."""
    from urllib.parse import parse_qsl, urlencode

    parts = urlsplit(url)
    if parts.password is None and not parts.query:
        return url  # nothing to hide (and urlsplit/geturl would turn memory:// into memory:)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            masked = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
            parts = parts._replace(query=urlencode(masked, safe="*"))
    return parts.geturl()
