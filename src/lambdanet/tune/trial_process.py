"""Trials driven by their own OS process (``--trial-driver process``): P trial-driver processes,
each running the trials the tune driver hands it, one at a time.

Usage (the tune driver, one per parallel slot)::

    proc = TrialProcess.start(req, home)            # python -m lambdanet.tune.trial_process
    proc.run_trial(trial._trial_id, on_event)       # blocks until the trial is told to Optuna
    proc.stop(); proc.close()

**Why.** With the local executor a trial's rounds run in the thread that drives it; P trials
driven by P threads of one process share its GIL and run little faster than one after the other
(the measured figure is in docs/benchmarks.md, "Figures behind the code's choices"). A
trial-driver process has its own interpreter; the machine's
cores are shared by budget (``TuneRequest.cpu_threads``: cores // (P × K) threads per worker).

**The protocol** is JSON lines, no pickle. The tune driver keeps the study's only sampler: it
asks every trial itself and sends ``{"trial_id": N}``; the process runs it with
:class:`~lambdanet.tune.trial.TrialRunner` over the same study (Optuna's journal storage is made
for several processes) and writes the runner's events, then ``{"done": N}``. ``{"stop": true}``
stops the trial at its next round boundary (Ctrl-C: ``{"stopped": N}``, the run marked
interrupted); SIGTERM stops it at once (marked interrupted). A fatal error is
``{"fatal": "...", "error_class": "StoreUnavailable"}``, raised again in the tune driver with its
exit code. The process's stdin is its tie to the tune driver: at end of input with a trial
running (the tune driver was killed), it exits at once, as if killed with it, so that
``--resume`` finds the trial's run with no live driver; its stdout carries only the protocol
(everything printed goes to stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import IO, Any

from lambdanet.errors import EngineError, LambdanetError, describe
from lambdanet.tune.request import TuneRequest

Event = Callable[[dict[str, Any]], None]
EXIT_ORPHANED = 75  # the tune driver went away while a trial ran


def _error_classes(root: type[LambdanetError] = LambdanetError) -> dict[str, type[LambdanetError]]:
    out = {root.__name__: root}
    for sub in root.__subclasses__():
        out.update(_error_classes(sub))
    return out


def error_from(name: str, message: str) -> BaseException:
    """The exception a trial-driver process reported, rebuilt in the tune driver (its exit code
    follows): a lambdanet error by class name, anything else an EngineError with the line."""
    cls = _error_classes().get(name)
    return cls(message) if cls is not None else EngineError(f"trial-driver process: {name}: {message}")


class TrialProcess:
    """The tune driver's handle on one trial-driver process."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, req: TuneRequest, home: Path, lithops_config: str | None = None) -> TrialProcess:
        """A trial-driver process for ``req`` under ``home`` (its executor opened with ``lithops_config``)."""
        env = {**os.environ, "LAMBDANET_HOME": str(home)}
        proc = subprocess.Popen([sys.executable, "-m", "lambdanet.tune.trial_process"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        # the full request (store URLs with their passwords) over the pipe, never on the command line
        cls._send(proc, {"request": asdict(req), "home": str(home), "lithops_config": lithops_config})
        return cls(proc)

    @staticmethod
    def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # a dead process: its end of output says so
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()

    def run_trial(self, trial_id: int, on_event: Event) -> bool:
        """Run one trial there; False when it stopped for Ctrl-C. Raises what the process reported."""
        self._send(self.proc, {"trial_id": trial_id})
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if "event" in message:
                on_event(message)
            elif message.get("done") == trial_id:
                return True
            elif message.get("stopped") == trial_id:
                return False
            elif "fatal" in message:
                raise error_from(str(message.get("error_class")), str(message["fatal"]))
        code = self.proc.wait()
        raise EngineError(f"the trial-driver process of trial id {trial_id} exited with code {code} before the "
                          f"trial ended; the study stops (continue it with --resume)")

    def stop(self) -> None:
        """Ctrl-C: the running trial stops at its next round boundary."""
        self._send(self.proc, {"stop": True})

    def terminate(self) -> None:
        """Past the grace period: the running trial stops now (its run marked interrupted)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def close(self, timeout_s: float = 10.0) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ---- the trial-driver process ------------------------------------------------------------------
def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    import optuna

    from lambdanet.cpu_budget import plan_budget, process_limits
    from lambdanet.services import Services
    from lambdanet.settings import Settings
    from lambdanet.tune.optuna_study import open_study
    from lambdanet.tune.request import study_folder
    from lambdanet.tune.split import ValidationSplit
    from lambdanet.tune.trial import StudyStopping, TrialRunner

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tune driver's: it sends "stop"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    protocol: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else prints (the engine's progress) goes to stderr, not into the protocol
    write_lock = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with write_lock:
            protocol.write(json.dumps(message) + "\n")

    header = json.loads(sys.stdin.readline())
    req, home = TuneRequest(**header["request"]), Path(header["home"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    services = Services.open(Settings.from_env(store_url=req.store_url, executor=req.executor,
                                               lithops_config=header.get("lithops_config")))
    stop, busy = threading.Event(), threading.Event()
    work: queue.Queue[int | None] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            message = json.loads(line)
            if "trial_id" in message:
                work.put(int(message["trial_id"]))
            elif message.get("stop"):
                stop.set()
        if busy.is_set():  # the tune driver died mid-trial: go with it (the run resumes from a checkpoint)
            os._exit(EXIT_ORPHANED)
        work.put(None)

    trial_id: int | None = None
    try:
        runner = TrialRunner(services, req, req.check(), open_study(req, home, create=False),
                             ValidationSplit.load(study_folder(home, req.study)), stop=stop, on_event=emit)
        threading.Thread(target=read_commands, name="tune-commands", daemon=True).start()
        with process_limits(plan_budget("local", req.workers, req.cpu_threads)):
            while (trial_id := work.get()) is not None:
                busy.set()
                try:
                    runner.run(optuna.trial.Trial(runner.study, trial_id))
                finally:
                    busy.clear()
                emit({"done": trial_id})
        return 0
    except (StudyStopping, KeyboardInterrupt):
        emit({"stopped": trial_id})
        return 130
    except BaseException as exc:
        emit({"fatal": describe(exc).partition(": ")[2] or describe(exc), "error_class": type(exc).__name__})
        return 1
    finally:
        services.close()


if __name__ == "__main__":
    raise SystemExit(main())
