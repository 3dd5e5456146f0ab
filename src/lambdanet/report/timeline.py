"""Which worker calls were retries: the data the report's timeline is drawn from.

The engine numbers attempts run-wide (``INCR ln:{run}:attempts``), so attempt ids keep growing
from round to round: round 1 may run as attempt 0, round 2 as attempt 1, and so on. A call is a
**retry** when its attempt is a second or later attempt OF THE SAME ROUND — the smallest attempt
id recorded for a round is that round's first try.

Usage::

    bars = classify(services.ledger.calls(run_id))
    [b.state for b in bars]          # "ok" | "retry" | "failed"
    retried_attempts(calls)          # how many round attempts were retries
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lambdanet.ports.ledger import CallRow


@dataclass(frozen=True)
class TimelineCall:
    """One worker call with its try number within its round (0 = the round's first attempt)."""

    call: CallRow
    try_no: int

    @property
    def retry(self) -> bool:
        return self.try_no > 0

    @property
    def state(self) -> str:
        """``failed`` (the call failed), ``retry`` (a later attempt of its round) or ``ok``."""
        if not self.call.ok:
            return "failed"
        return "retry" if self.retry else "ok"


def tries(calls: Sequence[CallRow]) -> dict[tuple[int, int], int]:
    """``(round, attempt) -> try`` (0 for the smallest attempt id of the round, 1 for the next, …)."""
    per_round: dict[int, set[int]] = {}
    for c in calls:
        per_round.setdefault(c.round, set()).add(c.attempt)
    return {(rnd, attempt): i for rnd, attempts in per_round.items()
            for i, attempt in enumerate(sorted(attempts))}


def classify(calls: Sequence[CallRow]) -> list[TimelineCall]:
    """Every call (in the given order) with its try number within its round."""
    index = tries(calls)
    return [TimelineCall(c, index[(c.round, c.attempt)]) for c in calls]


def retried_attempts(calls: Sequence[CallRow]) -> int:
    """How many round attempts were retries (second or later attempts of their round)."""
    return sum(1 for t in tries(calls).values() if t > 0)
