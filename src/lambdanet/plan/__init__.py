"""``lambdanet plan``: predict a run's wall time, worker-seconds, bytes and dollars before it starts.

:mod:`lambdanet.plan.model` is the arithmetic (frozen inputs and output), :mod:`lambdanet.plan.calibrate`
what is measured on this machine (cached), :mod:`lambdanet.plan.prices` AWS's published figures.
"""
