"""Worker functions an executor's checks run (:mod:`.probes`: echo, fail, crash, meet, sleep).

They ship in the package, unlike the other test helpers (``tests/support``), because a check
runs them *in the worker*: a process executor's child process or a Lithops function imports
them by module name, so they must be importable wherever lambdanet is installed — a test
module is not. Nothing in the package's own code paths imports them.
"""
