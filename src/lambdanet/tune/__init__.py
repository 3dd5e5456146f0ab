"""``lambdanet tune``: hyperparameter search with Optuna over lambdanet runs (see docs/tuning.md).

* :mod:`lambdanet.tune.space` — ``space.json`` → Optuna distributions, validated against the config model;
* :mod:`lambdanet.tune.journal` — the study's journal storage: a file or a Redis list, JSON only;
* :mod:`lambdanet.tune.evaluate` — the validation metric of a run's state;
* :mod:`lambdanet.tune.study` — the study loop (:class:`Tuner`): trials as runs, pruning at round
  boundaries, parallel trials, resume, the best model aliased ``staging``.
"""
