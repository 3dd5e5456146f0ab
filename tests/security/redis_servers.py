"""Kept only as an alias for ``tests/faults/test_reliability_resume.py``: the one Redis launcher of
the tests is :class:`tests.conftest.RedisServer` (password and TLS options included). Import it
from there; this module goes once that file does."""

from tests.conftest import RedisServer as RedisProc
from tests.conftest import make_tls_files

__all__ = ["RedisProc", "make_tls_files"]
