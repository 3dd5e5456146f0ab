"""The one explicit registry of adapters, and the functions that open them from URLs.

Every adapter class has a ``from_url(url: str)`` classmethod. The scheme of the URL picks the
class from :data:`ADAPTERS`; an unknown scheme is an error that lists the known ones, and
nothing is ever chosen implicitly (no silent cloud default). Adapter modules import their
vendor library (redis, boto3, lithops, …) at module level; a missing one becomes
:class:`MissingExtra` naming the ``pip install 'lambdanet[extra]'`` to run.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from lambdanet.errors import ConfigError, MissingExtra, UnknownScheme, URLError
from lambdanet.journals import check_study_name
from lambdanet.ports import Executor, Ledger, Notifier, ObjectStore, TensorStore

if TYPE_CHECKING:
    from optuna.storages.journal import BaseJournalBackend

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
    "journal": {  # a tuning study's journal (Optuna journal storage, JSON logs only)
        "file": "lambdanet.journals.file:FileJournal",
        "redis": "lambdanet.journals.redis:RedisJournal",
        "rediss": "lambdanet.journals.redis:RedisJournal",
        "dynamodb": "lambdanet.journals.dynamodb:DynamoJournal",
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
    "optuna": "tune",
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


def _journal_class(url: str) -> Any:
    scheme = scheme_of(url) if "://" in url else "file"  # a bare word: the file journal refuses all but 'file'
    try:
        return load_class("journal", scheme)
    except UnknownScheme:
        raise ConfigError(f"study storage {redact(url)!r}: use 'file' (under LAMBDANET_HOME), redis://host:port/db "
                          f"or dynamodb://table?region=…") from None


def open_journal(url: str, study: str, home: Path, *, create: bool = True) -> BaseJournalBackend:
    """The journal of ``study``: ``url`` is ``file`` (under ``home``), a Redis URL or a DynamoDB
    URL; ``create=False``: the study must exist where that can be told without writing (a file)."""
    check_study_name(study)
    return _journal_class(url).from_url(url, study, home, create=create)  # type: ignore[no-any-return]


def journal_exists(url: str, study: str, home: Path) -> bool:
    """True when the study's journal already has entries (a new study must not reuse it)."""
    journal = open_journal(url, study, home)
    try:
        return bool(journal.exists())  # type: ignore[attr-defined]
    finally:
        journal.close()  # type: ignore[attr-defined]


SECRET_QUERY_KEYS = frozenset({"password", "passwd", "secret", "token", "aws_secret_access_key", "api_key"})
_SECRET_QUERY = re.compile(r"([?&](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs, the ledger and reports): the
    ``user:password@`` part and query parameters such as ``?password=…`` (redis-py accepts both).
    Everything else is left as written (``sqlite:///a.db?mode=ro`` stays exactly that)."""
    try:
        password = urlsplit(url).password
    except ValueError:  # not parseable (e.g. an unclosed '['): mask by pattern, it is only shown
        return _SECRET_QUERY.sub(r"\1***", re.sub(r"://[^/?#]*@", "://***@", url))
    head, question, tail = url.partition("?")  # a password (in the netloc) never holds a '?'
    if password is not None:
        head = head.replace(f":{password}@", ":***@", 1)
    query, hash_, fragment = tail.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
        masked = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return head + question + query + hash_ + fragment


@dataclass(frozen=True)
class AdapterURL:
    """An adapter URL taken apart: ``scheme://netloc/path?option=value&…``."""

    scheme: str  # lower-cased
    netloc: str
    path: str
    hostname: str | None
    options: dict[str, str]  # each at most once; a blank value (``?region=``) is kept as ""


def parse_url(url: str, *, schemes: Collection[str], name: str, usage: str,
              options: Collection[str] | None = (), article: str = "a", bare: bool = False) -> AdapterURL:
    """``url`` taken apart for the adapter ``name`` (as messages call it: "S3", "DynamoDB"), or a
    one-line :class:`URLError` (the URL redacted) saying what is wrong and ``usage`` (the form to
    use). ``schemes``: the schemes it answers to; ``options``: the query options it takes, in the
    order messages list them (``None``: any, e.g. redis-py's, which the adapter passes on); an
    unknown option, or one given twice, is an error. ``bare``: a bare scheme word (``lithops``)
    is also accepted, with no options."""
    shown = redact(url)
    if bare and "://" not in url:
        if url.strip().lower() not in schemes:
            raise URLError(f"not {article} {name} URL: {shown!r} (use {usage})")
        return AdapterURL(url.strip().lower(), "", "", None, {})
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise URLError(f"bad {name} URL {shown!r}: {exc} (use {usage})") from None
    if parts.scheme.lower() not in schemes:
        raise URLError(f"not {article} {name} URL: {shown!r} (use {usage})")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if options is not None:
        unknown = sorted({k for k, _ in pairs} - set(options))
        if unknown:
            known = ", ".join(options) or "none"
            raise URLError(f"{name} URL option(s) {', '.join(unknown)} unknown (known: {known})")
    repeated = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    if repeated:
        raise URLError(f"{name} URL {shown!r} gives the option(s) {', '.join(repeated)} more than once; "
                       "give each once")
    return AdapterURL(parts.scheme.lower(), parts.netloc, parts.path, hostname, dict(pairs))
