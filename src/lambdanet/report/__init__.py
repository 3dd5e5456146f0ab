"""The analysis report of training runs (itsacat's analysis notebook, as one command).

- :mod:`~lambdanet.report.metrics` — confusion matrix, per-class precision/recall/specificity/FPR/F1
- :mod:`~lambdanet.report.collect` — gather a run's ledger rows and its model's predictions
- :mod:`~lambdanet.report.timeline` — which worker calls were retries (later attempts of the same round)
- :mod:`~lambdanet.report.plots` — matplotlib (Agg) figures as PNG bytes / data URIs
- :mod:`~lambdanet.report.html` — the self-contained HTML report
- :mod:`~lambdanet.report.compare` — several runs side by side
"""
