"""The exception tree of lambdanet.

Every error a user can cause or meet derives from :class:`LambdanetError`. Each class carries
the CLI exit code and the HTTP status it maps to, so ``cli`` and ``serve`` translate errors in
one place. Adapters translate vendor exceptions at the boundary::

    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise StoreUnavailable(url) from exc

Messages are one line that says what is wrong and what to do.
"""

from __future__ import annotations


class LambdanetError(Exception):
    """Base of every lambdanet error; ``str(err)`` is the one-line message shown to users."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class PortMisuse(LambdanetError):
    """A caller broke a port's contract (e.g. an unknown ledger field): a bug in lambdanet, never
    the user's input (exit 1, HTTP 500)."""


# ---- bad input (exit 2, HTTP 400) -------------------------------------------------------------
class UserInputError(LambdanetError):
    """Something the user gave us is wrong; the message says what and how to fix it."""

    exit_code = 2
    http_status = 400


class ConfigError(UserInputError):
    """A parameters.json / CNN config / CLI option is invalid."""


class DataError(UserInputError):
    """A data file (h5, npz, image folder) is missing, unreadable or malformed."""


class ImageError(UserInputError):
    """An image (upload, photo) cannot be decoded or is unsafe (bomb, 0x0, …)."""


class URLError(UserInputError):
    """A URL is malformed, uses an unknown scheme, or is refused by a guard."""


class UnknownScheme(URLError):
    """No adapter is registered for the URL's scheme; the message lists the known ones."""


class MissingExtra(UserInputError):
    """An optional dependency is not installed; the message names the extra to install."""


class Forbidden(URLError):
    """A request the server refuses as configured (e.g. fetching images from URLs while that is off)."""

    http_status = 403


class PayloadTooLarge(UserInputError):
    http_status = 413


# ---- things that do not exist (exit 2, HTTP 404) ---------------------------------------------
class NotFound(UserInputError):
    http_status = 404


class RunNotFound(NotFound):
    """No run with that id in the ledger."""


class ModelNotFound(NotFound):
    """No such model, version or alias in the registry."""


class ObjectNotFound(NotFound):
    """No such key in the object store."""


# ---- infrastructure (exit 3, HTTP 503) -------------------------------------------------------
class Unavailable(LambdanetError):
    """A service we depend on cannot be reached or failed; retrying later may help."""

    exit_code = 3
    http_status = 503


class StoreUnavailable(Unavailable):
    """The tensor store (memory/redis) cannot be reached."""


class LedgerUnavailable(Unavailable):
    """The ledger (sqlite/dynamodb) cannot be read or written."""


class ObjectStoreUnavailable(Unavailable):
    """The object store (folder/s3) cannot be read or written (disk full, permissions, network)."""


class NotifierUnavailable(Unavailable):
    """A notification could not be delivered (after retries)."""


# ---- something stored is broken (exit 3, HTTP 500) -------------------------------------------
class ModelCorrupt(LambdanetError):
    """A registered model version exists but cannot be used: its model.json is not valid JSON or
    lacks / mistypes a field, its weights are missing, unreadable or do not fit the metadata.
    The server's fault, not the caller's: HTTP 500 (never 404), exit 3. The message names the
    version and what is wrong."""

    exit_code = 3
    http_status = 500


# ---- the engine (exit 4) ---------------------------------------------------------------------
class EngineError(LambdanetError):
    exit_code = 4


class DeadlineExceeded(EngineError):
    """A collective wait or a worker call passed its deadline."""


class StaleAttempt(EngineError):
    """A worker belongs to an attempt that is no longer current (fenced off)."""


class WorkerFailed(EngineError):
    """A worker call raised, crashed or timed out; the round attempt fails."""


class RoundFailed(EngineError):
    """Every attempt of a round failed; ``reason`` is the last one."""

    def __init__(self, message: str, reason: str, attempts: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class RunFailed(EngineError):
    """A run exhausted its retries; the ledger and notifier carry the reason."""


class AttemptAborted(EngineError):
    """A peer of this round attempt failed first (or the driver gave up on the attempt): every
    worker stops at its next collective. ``str(err)`` carries the first failure's reason, e.g.
    ``"worker 3: exit code -9"``."""


class LeaseHeld(EngineError):
    """Another driver (a live process, or another execution) owns the run; this one must not
    drive it. The message names the owner and until when its lease runs."""


class StaleDriver(EngineError):
    """This driver's lease on the run was taken over (its invocation was replayed or timed out):
    it must stop without writing anything more for the run."""


class Interrupted(LambdanetError):
    """The user interrupted a run (Ctrl-C); the run is marked interrupted and can be resumed."""

    exit_code = 130


def describe(exc: BaseException) -> str:
    """One line for any exception: ``"ExcName: message"`` (how worker failures are reported)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

