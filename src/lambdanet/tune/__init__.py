"""``lambdanet tune``: hyperparameter search with Optuna over lambdanet runs (see docs/tuning.md).

* :mod:`lambdanet.tune.request` — the study's settings (:class:`TuneRequest`) and summary (:class:`StudyResult`);
* :mod:`lambdanet.tune.space` — ``space.json`` → Optuna distributions, validated against the config model;
* :mod:`lambdanet.tune.split` — the seeded validation split of the training set (trials never hold the test set);
* :mod:`lambdanet.journals` (an adapter kind: ``adapters.open_journal``) — the study's journal storage:
  a file, a Redis list or DynamoDB, JSON only;
* :mod:`lambdanet.tune.optuna_study` — sampler, pruners, the study over the journal, why a trial was pruned;
* :mod:`lambdanet.tune.evaluate` — the validation metric of a run's state;
* :mod:`lambdanet.tune.trial` — one trial as a run, scored and maybe pruned after every round;
* :mod:`lambdanet.tune.trial_process` — a trial-driver process (``--trial-driver process``), JSON lines;
* :mod:`lambdanet.tune.study` — the study driver (:class:`Tuner`): parallel trials, resume, the best
  model aliased ``staging``.
"""
