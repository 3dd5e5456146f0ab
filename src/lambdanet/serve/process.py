"""Process-wide settings of the ``lambdanet serve`` process (the server's own decision, made
once before it serves; never the user's environment, and never in a process that merely builds
an app, such as a test).

Usage::

    tune_server_process()          # in the server process, after the app is built
    uvicorn.run(app, ...)

What and why:

- **One BLAS thread** for numpy (threadpoolctl), unless the user set a thread variable
  (``OPENBLAS_NUM_THREADS``…): as for a training run's CPU budget, theirs wins. A server's
  parallelism comes from batching and from the event loop overlapping a forward pass with the
  next requests; BLAS threads that spin for a small matrix product only take cores from the
  event loop (stalls of tens to hundreds of milliseconds under load when OpenBLAS threads
  contend; figures in docs/benchmarks.md, "Figures behind the code's choices"). PyTorch's own
  intra-op threads are left as they are: a CNN's forward pass is what they speed up.
- **A shorter GIL switch interval** (0.5 ms instead of 5 ms). A forward pass in the batcher's
  thread releases the GIL inside each kernel and needs it back between kernels; while the event
  loop is busy, every such hand-back waited up to the interval, so a LeNet pass of a dozen
  kernels took much longer under load.
- **The start-up heap frozen** (``gc.freeze``). The imports and the app leave many objects that
  live as long as the process; a full collection walked them all (a pause every few seconds
  under load: the p99). Frozen, collections only walk new objects.
"""

from __future__ import annotations

import gc
import os
import sys

from lambdanet.cpu_budget import user_thread_env

SWITCH_INTERVAL_S = 0.0005


def tune_server_process() -> None:
    from threadpoolctl import threadpool_limits

    if not user_thread_env(os.environ):
        threadpool_limits(limits=1, user_api="blas")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
