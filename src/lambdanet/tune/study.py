"""The study driver of ``lambdanet tune``: Optuna asks, lambdanet runs train, rounds are the rungs.

Usage::

    req = TuneRequest(study="lr-search", data="datasets.h5", base=base_dict, space=space_json,
                      trials=32, parallel=2, executor="process", store_url="redis://…", pruner="median")
    result = Tuner(services, req, on_event=print).run()          # StudyResult; .to_json()
    Tuner.resume(services, "lr-search", storage="file").run()    # after Ctrl-C or a killed driver

**The split.** The data set is read once, here, and its training set split
(:mod:`lambdanet.tune.split`); trials train on the split's training part and never read the test
set, which is read once, at the end, to score the best trial.

**Trials** (:mod:`lambdanet.tune.trial`) are lambdanet runs scored on the validation split after
every round and pruned at round boundaries. ``parallel`` slots each drive one trial at a time:
a thread of this process (``trial_driver="thread"``: the rounds run elsewhere, on the process or
Lithops executor) or a trial-driver process (``"process"``, :mod:`lambdanet.tune.trial_process`:
CPU-bound trials on the local executor, which threads would serialise on the GIL). This driver
asks every trial (one sampler: TPE with ``constant_liar``, seeded). The study lives in Optuna's
journal storage over JSON logs only (:mod:`lambdanet.journals`): a file under
``LAMBDANET_HOME`` or a Redis list.

**Resume.** The study's settings are the study's user attributes (JSON). A RUNNING trial is
continued (its run resumed from the last checkpoint, or its recorded outcome told), new trials
are asked only while the study has fewer than ``trials`` — none is counted twice.

**At the end** the best trial's model version (registered by its run) gets the alias ``staging``
— never ``production`` — and the summary goes to the study (``summary`` attribute) and to the
object store (``studies/<study>/summary.json``) for ``lambdanet report --study``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lambdanet.adapters import journal_exists, open_journal
from lambdanet.config import TrainConfig
from lambdanet.cpu_budget import plan_budget, process_limits
from lambdanet.engine import checkpoints
from lambdanet.engine.requests import safe_url
from lambdanet.engine.strategies import load_strategy, strategy_path
from lambdanet.errors import ConfigError, Interrupted, RunFailed, RunNotFound, UserInputError
from lambdanet.journals import check_study_name
from lambdanet.services import Services
from lambdanet.tune.evaluate import Score, evaluate
from lambdanet.tune.optuna_study import open_study
from lambdanet.tune.request import StudyResult, TuneRequest, study_folder, summary_key
from lambdanet.tune.split import ValidationSplit
from lambdanet.tune.trial import Event, StudyStopping, TrialRunner, finite
from lambdanet.tune.trial_process import TrialProcess

ATTR = "lambdanet"  # the study's user attribute holding its settings
GRACE_S = 10.0  # Ctrl-C: how long running trials may take to reach their round boundary


class Tuner:
    """Runs (or resumes) one study; see the module docstring."""

    def __init__(self, services: Services, request: TuneRequest, *, on_event: Event | None = None,
                 resume: bool = False) -> None:
        self.services = services
        self.req = request
        self.space = request.check()
        self.on_event = on_event
        self.resuming = resume
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._processes: list[TrialProcess] = []
        self._resumable: list[FrozenTrial] = []
        self.study: optuna.Study | None = None
        self.runner: TrialRunner | None = None

    @classmethod
    def resume(cls, services: Services, study: str, *, storage: str = "file", on_event: Event | None = None,
               **overrides: Any) -> Tuner:
        """A tuner for an existing study, with the settings it was started with (``overrides``,
        e.g. ``parallel`` or a ``store_url`` holding a password, replace them)."""
        check_study_name(study)
        backend = open_journal(storage, study, services.settings.home, create=False)
        try:
            loaded = optuna.load_study(study_name=study, storage=optuna.storages.JournalStorage(backend))
        except KeyError:
            raise ConfigError(f"no study '{study}' in the study storage {safe_url(storage)}") from None
        attrs = loaded.user_attrs.get(ATTR)
        if not isinstance(attrs, dict):
            raise ConfigError(f"study '{study}' was not created by lambdanet tune (no settings); cannot resume it")
        if "***" in str(attrs.get("store_url", "")) and overrides.get("store_url") is None:
            raise ConfigError(f"study '{study}' used a store with a password ({attrs['store_url']}); pass the full "
                              f"URL with --store to resume it")
        request = TuneRequest.from_attrs(attrs, storage=storage, **overrides)
        return cls(services, request, on_event=on_event, resume=True)

    def _event(self, kind: str, **fields: Any) -> None:
        assert self.runner is not None
        self.runner.event(kind, **fields)

    # ---- the study -----------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        req, home = self.req, self.services.settings.home
        if not self.resuming and journal_exists(req.storage, req.study, home):
            raise UserInputError(f"study '{req.study}' already exists in {safe_url(req.storage)}; continue it with "
                                 f"`lambdanet tune --study {req.study} --resume` or choose another --study")
        study = open_study(req, home, create=True)
        if not isinstance(study.user_attrs.get(ATTR), dict):
            study.set_user_attr(ATTR, req.to_attrs())
        return study

    def _prepare_data(self) -> ValidationSplit:
        req = self.req
        split = ValidationSplit.prepare(req.data, req.validation_fraction, req.seed,
                                        study_folder(self.services.settings.home, req.study), req.base_config)
        # the base config and the engine settings against the data, before any trial
        load_strategy(strategy_path(req.base_config.kind, req.strategy_name)).validate(
            req.base_config, req.workers, split.train)
        return split

    def run(self) -> StudyResult:
        t0 = time.time()
        req = self.req
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # lambdanet reports the trials itself
        split = self._prepare_data()
        self.study = study = self._open_study()
        self.runner = TrialRunner(self.services, req, self.space, study, split, stop=self._stop,
                                  on_event=self.on_event)
        self._resumable = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        done = len(study.get_trials(deepcopy=False)) - len(self._resumable)
        self._event("study_started", trials=req.trials, parallel=req.parallel, executor=req.executor,
                    storage=safe_url(req.storage), resumed=self.resuming, finished_before=done,
                    continuing=[t.number for t in self._resumable], epochs_per_round=req.round_epochs,
                    trial_driver=req.trial_driver, cpu_threads=req.cpu_threads)
        if req.trial_driver == "process":
            settings = self.services.settings
            self._processes = [TrialProcess.start(req, settings.home, settings.lithops_config)
                               for _ in range(req.parallel)]
            slots = [threading.Thread(target=self._slot, args=(p,), name=f"tune-{req.study}-{i}", daemon=True)
                     for i, p in enumerate(self._processes)]
        else:
            slots = [threading.Thread(target=self._slot, args=(None,), name=f"tune-{req.study}-{i}", daemon=True)
                     for i in range(req.parallel)]
        # the P trials share this machine's cores: cores // (P × K) threads each (unless the user set a
        # thread variable); the trial-driver processes hold the same budget themselves
        with process_limits(plan_budget("local", req.workers, req.cpu_threads)):
            for t in slots:
                t.start()
            try:
                while any(t.is_alive() for t in slots):
                    for t in slots:
                        t.join(0.2)
            except KeyboardInterrupt:
                self._interrupt(slots)
                raise Interrupted(f"study {req.study} interrupted; continue it with `lambdanet tune --study "
                                  f"{req.study} --resume`") from None
            finally:
                for p in self._processes:
                    p.close()
        if self._fatal is not None:
            raise self._fatal
        return self._finalize(time.time() - t0)

    def _interrupt(self, slots: list[threading.Thread]) -> None:
        """Ctrl-C: trials stop at their next round boundary (waiting up to GRACE_S); a run still in a
        round is then marked interrupted; the trials stay RUNNING in the study for --resume."""
        assert self.runner is not None
        self._stop.set()
        for p in self._processes:
            p.stop()
        deadline = time.monotonic() + GRACE_S
        with contextlib.suppress(KeyboardInterrupt):
            for t in slots:
                t.join(max(0.0, deadline - time.monotonic()))
        for p in self._processes:
            p.terminate()  # its trial's run is marked interrupted there
        self.runner.mark_active_interrupted()

    def _slot(self, process: TrialProcess | None) -> None:
        assert self.runner is not None
        while not self._stop.is_set():
            try:
                trial = self._next_trial()
                if trial is None:
                    return
                if process is None:
                    self.runner.run(trial)
                elif not process.run_trial(trial._trial_id, self.runner.forward):
                    return  # stopped (Ctrl-C)
            except StudyStopping:
                return
            except BaseException as exc:  # handed to the main thread
                with self._lock:
                    if self._fatal is None:
                        self._fatal = exc
                self._stop.set()
                for p in self._processes:
                    p.stop()
                return

    def _next_trial(self) -> optuna.Trial | None:
        assert self.study is not None
        with self._lock:
            if self._stop.is_set():
                return None
            if self._resumable:
                frozen = self._resumable.pop(0)
                return optuna.trial.Trial(self.study, frozen._trial_id)
            if len(self.study.get_trials(deepcopy=False)) >= self.req.trials:
                return None
            return self.study.ask(dict(self.space.distributions))

    # ---- the end -------------------------------------------------------------------------------
    def _trial_runs(self, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        out = []
        for t in trials:
            run_id = t.user_attrs.get("run_id")
            metrics: dict[str, Any] = {}
            status = None
            if isinstance(run_id, str):
                with contextlib.suppress(RunNotFound):
                    rec = self.services.ledger.get_run(run_id)
                    metrics, status = rec.metrics, rec.status
            out.append({"trial": t.number, "state": t.state.name, "run_id": run_id, "run_status": status,
                        "params": t.params, "value": t.value, "epochs_done": metrics.get("epochs_done"),
                        "validation_cost": metrics.get("validation_cost"),
                        "validation_accuracy": metrics.get("validation_accuracy"),
                        "worker_seconds": metrics.get("worker_seconds", 0.0),
                        "estimated_cost_usd": metrics.get("estimated_cost_usd", 0.0),
                        "reason": t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason")})
        return out

    def _finalize(self, wall_seconds: float) -> StudyResult:
        assert self.study is not None
        req, services, study = self.req, self.services, self.study
        trials = study.get_trials(deepcopy=False)
        runs = self._trial_runs(trials)
        counts = {s: sum(1 for t in trials if t.state == s) for s in
                  (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        base = StudyResult(
            study=req.study, status="completed", trials=len(trials), completed=counts[TrialState.COMPLETE],
            pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL], best_trial=None, best_run=None,
            model=None, best_params={}, best_config={}, objective=req.objective, best_value=None,
            validation_cost=None, validation_accuracy=None, test_accuracy=None, wall_seconds=round(wall_seconds, 3),
            worker_seconds=round(sum(float(r["worker_seconds"] or 0) for r in runs), 3),
            estimated_cost_usd=round(sum(float(r["estimated_cost_usd"] or 0) for r in runs), 8),
            storage=safe_url(req.storage), trial_runs=runs)
        if counts[TrialState.COMPLETE] == 0:
            self._save_summary(replace(base, status="no_completed_trial"))
            raise RunFailed(f"study {req.study}: no trial completed ({base.pruned} pruned, {base.failed} failed of "
                            f"{base.trials}); see `lambdanet report --study {req.study}`")
        best = study.best_trial
        run_id = str(best.user_attrs["run_id"])
        rec = services.ledger.get_run(run_id)
        config = self.space.config_for(req.base, dict(best.params))
        model = rec.model or ""
        name, _, version = model.partition(":")
        if version.isdigit():
            services.registry.set_alias(name, "staging", int(version))  # never production: a human promotes
        test_score = self._test_score(config, run_id)
        if test_score is not None:
            services.ledger.update_run(run_id, metrics={"test_accuracy": test_score.accuracy,
                                                        "test_cost": finite(test_score.cost),
                                                        "best_of_study": req.study})
        result = replace(
            base, best_trial=best.number, best_run=run_id, model=model or None, best_params=dict(best.params),
            best_config=config.model_dump(), best_value=best.value,
            validation_cost=rec.metrics.get("validation_cost"),
            validation_accuracy=rec.metrics.get("validation_accuracy"),
            test_accuracy=None if test_score is None else test_score.accuracy)
        self._save_summary(result)
        self._event("study_completed", best_trial=best.number, model=model, test_accuracy=result.test_accuracy)
        return result

    def _test_score(self, config: TrainConfig, run_id: str) -> Score | None:
        """The test set, read now for the first time, scored with the best trial's final state."""
        from lambdanet.data.readers import load_dataset

        full = load_dataset(self.req.data, config)
        if full.x_test is None or full.y_test is None:
            return None
        pointer = checkpoints.read_pointer(self.services.objects, run_id)
        assert pointer is not None
        state = checkpoints.read_state(self.services.objects, pointer.file)
        return evaluate(config, state, full.x_test, full.y_test, full.n_classes)

    def _save_summary(self, result: StudyResult) -> None:
        assert self.study is not None
        payload = {**result.to_json(), "settings": self.req.to_attrs(), "finished_at": time.time()}
        self.services.objects.put(summary_key(self.req.study),
                                  json.dumps(payload, sort_keys=True, indent=1).encode())
        self.study.set_user_attr("summary", {k: v for k, v in payload.items() if k != "trial_runs"})
