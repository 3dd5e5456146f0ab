"""Object stores: a flat key -> bytes store (``folder.py`` for a local folder, ``s3.py`` for S3).

Every adapter validates its keys with :func:`check_key` (and list prefixes with
:func:`check_prefix`), so a key can never escape the store's root on any backend.
"""

from __future__ import annotations

from lambdanet.errors import URLError

__all__ = ["check_key", "check_prefix"]


def _bad_char(text: str) -> str | None:
    """The first NUL/control character or backslash in ``text``, or None."""
    for ch in text:
        if ch == "\\" or ord(ch) < 32 or ord(ch) == 127:
            return ch
    return None


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative '/'-separated object key, else raise URLError.

    Refused: an empty key, a leading '/', a backslash, NUL or any control character, an empty
    part ('a//b', a trailing '/') and the parts '.' and '..'.
    """
    if not isinstance(key, str) or not key:
        raise URLError("empty object key; give a relative key such as 'runs/r-1/checkpoint.json'")
    bad = _bad_char(key)
    if bad is not None:
        raise URLError(f"object key {key!r} contains the character {bad!r}; use '/'-separated plain names")
    if key.startswith("/"):
        raise URLError(f"object key {key!r} starts with '/'; keys are relative (e.g. 'models/x/aliases.json')")
    for part in key.split("/"):
        if part == "":
            raise URLError(f"object key {key!r} has an empty part ('//' or a trailing '/')")
        if part in (".", ".."):
            raise URLError(f"object key {key!r} contains '{part}'; keys cannot leave the store")
    return key


def check_prefix(prefix: str) -> str:
    """Validate a list prefix: '' or a key prefix that may end with '/' (same rules as keys)."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix
