"""Every adapter reads its URL through ``adapters.parse_url``: the forms each one documents parse
to the same parts as before, and a wrong, unknown, repeated or unparseable option is one
``URLError`` line (secrets redacted), never a silent pick or a ``ValueError``.

Nothing here connects anywhere: the adapters below build their clients lazily (DynamoDB is the
exception, so its URL errors are checked before it would connect)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lambdanet import adapters
from lambdanet.errors import URLError


def _one_line_error(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(URLError) as err:
        call(*args)
    text = str(err.value)
    assert "\n" not in text
    return text


# ---- the helper ---------------------------------------------------------------------------------
def test_parse_url_takes_the_url_apart() -> None:
    parts = adapters.parse_url("S3://bucket/a/b?region=eu-west-1&endpoint_url=http://127.0.0.1:9&x=",
                               schemes=("s3",), name="S3", usage="s3://bucket/prefix", options=None)
    assert (parts.scheme, parts.netloc, parts.path, parts.hostname) == ("s3", "bucket", "/a/b", "bucket")
    assert parts.options == {"region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9", "x": ""}


def test_unknown_options_are_listed_with_the_known_ones() -> None:
    text = _one_line_error(lambda: adapters.parse_url(
        "dynamodb://t?colour=blue&size=1&region=x", schemes=("dynamodb",), name="DynamoDB",
        usage="dynamodb://table", options=("region", "endpoint_url")))
    assert text == "DynamoDB URL option(s) colour, size unknown (known: region, endpoint_url)"


def test_a_repeated_option_is_refused_and_the_message_hides_secrets() -> None:
    url = "redis://:hunter2@cache:6379/0?socket_timeout=1&socket_timeout=2&password=hunter2"
    text = _one_line_error(lambda: adapters.parse_url(url, schemes=("redis",), name="Redis",
                                                      usage="redis://host:port/db", options=None))
    assert "socket_timeout" in text and "more than once" in text
    assert "hunter2" not in text


def test_a_wrong_scheme_names_the_form_to_use() -> None:
    text = _one_line_error(lambda: adapters.parse_url("http://x", schemes=("s3",), name="S3", article="an",
                                                      usage="s3://bucket/prefix"))
    assert text == "not an S3 URL: 'http://x' (use s3://bucket/prefix)"


def test_an_unparseable_url_is_a_url_error_not_a_value_error() -> None:
    text = _one_line_error(lambda: adapters.parse_url("s3://[bucket", schemes=("s3",), name="S3",
                                                      usage="s3://bucket/prefix"))
    assert text.startswith("bad S3 URL 's3://[bucket'")


def test_redact_hides_passwords_and_keeps_everything_else_as_written() -> None:
    assert adapters.redact("rediss://:pw@cache:6380/2?ssl_cert_reqs=none") == \
        "rediss://:***@cache:6380/2?ssl_cert_reqs=none"
    assert adapters.redact("redis://h/0?Password=z&a=1") == "redis://h/0?Password=***&a=1"
    assert adapters.redact("sqlite:///a/b.db?mode=ro") == "sqlite:///a/b.db?mode=ro"  # was sqlite:/a/b.db
    assert "pw" not in adapters.redact("redis://[bad:pw@host/0")


# ---- each adapter -------------------------------------------------------------------------------
def test_s3_url() -> None:
    from lambdanet.objects.s3 import S3Store

    store = S3Store.from_url("s3://bucket/runs/a?endpoint_url=http://127.0.0.1:9&region=eu-west-1")
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == \
        ("bucket", "runs/a", "http://127.0.0.1:9", "eu-west-1")
    assert "unknown (known: endpoint_url, region)" in _one_line_error(S3Store.from_url, "s3://b?acl=public")
    assert "more than once" in _one_line_error(S3Store.from_url, "s3://b?region=a&region=b")
    assert _one_line_error(S3Store.from_url, "file:///x").startswith("not an S3 URL")


def test_dynamodb_url_errors_come_before_any_connection() -> None:
    from lambdanet.ledgers.dynamodb import DynamoLedger

    assert "colour unknown (known: region, endpoint_url)" in _one_line_error(
        DynamoLedger.from_url, "dynamodb://t?colour=blue")
    assert "more than once" in _one_line_error(DynamoLedger.from_url, "dynamodb://t?region=a&region=b")
    assert _one_line_error(DynamoLedger.from_url, "s3://t").startswith("not a DynamoDB URL")


def test_sns_url() -> None:
    from lambdanet.notifiers.sns import SnsNotifier

    arn = "arn:aws:sns:eu-west-1:123456789012:lambdanet-runs"
    sns = SnsNotifier.from_url(f"sns://{arn}?endpoint_url=http://127.0.0.1:9")
    assert (sns.topic_arn, sns.region, sns.endpoint_url) == (arn, "eu-west-1", "http://127.0.0.1:9")
    assert SnsNotifier.from_url(f"SNS://{arn}/").topic_arn == arn
    assert "unknown (known: endpoint_url)" in _one_line_error(SnsNotifier.from_url, f"sns://{arn}?region=x")


def test_sqlite_url(tmp_path: Path) -> None:
    from lambdanet.ledgers.sqlite import SqliteLedger

    path = tmp_path / "ledger.db"
    ledger = SqliteLedger.from_url(f"sqlite:///{path}?mode=rw")
    assert not ledger.read_only and Path(ledger.path) == path
    ledger.close()
    assert SqliteLedger.from_url(f"sqlite:///{path}?mode=ro").read_only
    assert "mode=x is not a mode; use mode=ro" in _one_line_error(SqliteLedger.from_url, f"sqlite:///{path}?mode=x")
    assert "more than once" in _one_line_error(SqliteLedger.from_url, f"sqlite:///{path}?mode=ro&mode=rw")
    assert "unknown (known: mode)" in _one_line_error(SqliteLedger.from_url, f"sqlite:///{path}?journal=wal")


def test_lithops_url() -> None:
    from lambdanet.executors.lithops import LithopsExecutor

    bare = LithopsExecutor.from_url("lithops")
    assert (bare.backend, bare.version, bare.worker_processes) == ("localhost", 1, None)
    local = LithopsExecutor.from_url("lithops://localhost?version=2&worker_processes=3")
    assert (local.backend, local.version, local.worker_processes) == ("localhost", 2, 3)
    assert LithopsExecutor.from_url("lithops://aws_lambda").backend == "aws_lambda"
    assert "bogus unknown" in _one_line_error(LithopsExecutor.from_url, "lithops://localhost?bogus=1")
    assert "more than once" in _one_line_error(LithopsExecutor.from_url, "lithops://localhost?version=1&version=2")
    assert _one_line_error(LithopsExecutor.from_url, "lithopsx").startswith("not a Lithops URL")


def test_redis_url_options_go_to_redis_py_once_each() -> None:
    store = adapters.open_store("rediss://:pw@cache.example.invalid:6380/2?ssl_cert_reqs=none")
    assert store.url == "rediss://:***@cache.example.invalid:6380/2?ssl_cert_reqs=none"
    store.close()  # never connected
    text = _one_line_error(adapters.open_store, "redis://:pw@h:6379/0?socket_timeout=1&socket_timeout=2")
    assert "more than once" in text and ":pw@" not in text
    assert "has no host" in _one_line_error(adapters.open_store, "redis:///0")


def test_memory_and_console_urls_take_no_options() -> None:
    from lambdanet.notifiers.console import ConsoleNotifier
    from lambdanet.stores.memory import MemoryStore

    assert MemoryStore.from_url("memory://runs/a/").name == "runs/a"
    assert ConsoleNotifier.from_url("console:///STDOUT").stream == "stdout"
    assert "unknown (known: none)" in _one_line_error(MemoryStore.from_url, "memory://x?size=1")
    assert "unknown (known: none)" in _one_line_error(ConsoleNotifier.from_url, "console://?colour=1")


def test_read_only_ledger_url_reads_the_options_with_the_same_parser() -> None:
    from lambdanet.services import read_only_ledger_url

    assert read_only_ledger_url("sqlite:///a/b.db?mode=rw") == "sqlite:///a/b.db?mode=rw"  # the user's choice
    assert read_only_ledger_url("sqlite:///a/b.db") == "sqlite:///a/b.db?mode=ro"
    assert read_only_ledger_url("dynamodb://t?region=x&region=y") == "dynamodb://t?region=x&region=y"  # not ours
