"""The counts of the reliability suite, merged into ``test-artifacts/reliability-counts.json``.

Every part of the suite (bad inputs, fuzzing, faults, security, load) adds its figures under
its own key; the file is updated under an exclusive lock, so parallel pytest processes merge
rather than overwrite::

    from security.reliability_counts import record
    record("bad_inputs", {"tried": 52, "rejected": 52})
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
COUNTS = ARTIFACTS / "reliability-counts.json"


def record(section: str, figures: dict[str, Any]) -> Path:
    """Merge ``figures`` into ``section`` of the counts file (numbers add up only per section)."""
    ARTIFACTS.mkdir(exist_ok=True)
    lock_path = ARTIFACTS / ".reliability-counts.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data: dict[str, Any] = json.loads(COUNTS.read_text()) if COUNTS.exists() else {}
        except ValueError:
            data = {}
        entry = dict(data.get(section, {}))
        entry.update(figures)
        entry["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data[section] = entry
        tmp = COUNTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, COUNTS)
    return COUNTS


def read() -> dict[str, Any]:
    return json.loads(COUNTS.read_text()) if COUNTS.exists() else {}
