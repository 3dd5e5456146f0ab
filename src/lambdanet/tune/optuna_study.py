"""The Optuna side of a study: its sampler and pruner, the study over the JSON-only journal, and
the sentence that says why a trial was pruned.

Usage::

    study = open_study(req, home, create=True)       # optuna.Study over a lambdanet.journals adapter
    study = open_study(req, home, create=False)      # a trial-driver process: the same study
    reason = prune_reason(study, trial_number, req, value, epoch, rnd)

Rounds are the rungs: a trial reports its validation value at ``step = epochs done``. The median
pruner prunes a trial worse than the median of the finished trials at that step, once
``startup_trials`` trials have finished and after the trial's first ``warmup_rounds`` rounds; ASHA
(successive halving, reduction factor 3) keeps the top third of the trials at each rung, the first
rung being one round.
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lambdanet.adapters import open_journal
from lambdanet.tune.request import TuneRequest

ASHA_REDUCTION_FACTOR = 3


def make_pruner(req: TuneRequest) -> optuna.pruners.BasePruner:
    if req.pruner == "median":
        # MedianPruner skips steps below n_warmup_steps; step = epochs done, so W rounds of warm-up
        # end at epoch W × E and the first check is the round after
        warmup = req.warmup_rounds * req.round_epochs + 1 if req.warmup_rounds else 0
        return optuna.pruners.MedianPruner(n_startup_trials=req.startup_trials, n_warmup_steps=warmup)
    if req.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=req.round_epochs,
                                                      reduction_factor=ASHA_REDUCTION_FACTOR)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # constant_liar is "experimental" in Optuna's words
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def open_study(req: TuneRequest, home: Path, *, create: bool) -> optuna.Study:
    """The study over its journal (``create=False``: it must exist; a trial-driver process)."""
    storage = optuna.storages.JournalStorage(open_journal(req.storage, req.study, home, create=create))
    if not create:
        return optuna.load_study(study_name=req.study, storage=storage, sampler=make_sampler(req.seed),
                                 pruner=make_pruner(req))
    direction = optuna.study.StudyDirection.MINIMIZE if req.objective == "cost" else \
        optuna.study.StudyDirection.MAXIMIZE
    return optuna.create_study(study_name=req.study, storage=storage, direction=direction,
                               sampler=make_sampler(req.seed), pruner=make_pruner(req), load_if_exists=True)


def prune_reason(study: optuna.Study, number: int, req: TuneRequest, value: float, epoch: int, rnd: int) -> str:
    """Why the pruner stopped trial ``number`` at ``epoch``, with the figures it compared."""
    others = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False)
              if t.number != number and epoch in t.intermediate_values
              and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
    what = f"validation {req.objective} {value:.6g} at epoch {epoch} (round {rnd})"
    if req.pruner == "median":
        finished = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False)
                    if t.number != number and epoch in t.intermediate_values
                    and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if finished:
            what += (f"; median of the {len(finished)} finished trials at that epoch "
                     f"{statistics.median(finished):.6g}")
        return f"pruned by the median pruner: {what}"
    return (f"pruned by the asha pruner: {what}, not in the top 1/{ASHA_REDUCTION_FACTOR} of the "
            f"{len(others) + 1} trials that reached that rung")
