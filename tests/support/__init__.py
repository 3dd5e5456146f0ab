"""Helpers the tests (and a few benchmarks) share: small real models, a uvicorn thread, CIFAR-10
subsets. They live here, not in the package, because nothing in production uses them.

The shared data sets are found by one explicit setting: ``LAMBDANET_SHARED`` (a folder holding
``datasets/`` and ``images/``), by default the ``shared/`` folder beside this checkout — where
CI and the README put it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # this checkout: tests/support/__init__.py -> the repository root
SHARED = Path(os.environ.get("LAMBDANET_SHARED") or REPO.parent / "shared").resolve()
CIFAR10 = SHARED / "datasets" / "cifar10"
