"""Run the real prediction app under uvicorn for the corpus tests (a subprocess of the test).

    python tests/bad/run_server.py OBJECTS_DIR PORT [ALLOWED_LOOPBACK_PORT]

URL fetching is on. The address policy admits public addresses only (the server's own default)
plus, when given, one loopback port: the test's redirector, so that the *next* hop of a redirect
(to loopback) is what gets refused. Nothing else differs from ``lambdanet serve``.
"""

from __future__ import annotations

import ipaddress
import sys

import uvicorn

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from lambdanet.serve.app import ServeOptions, create_app
from lambdanet.serve.urlguard import is_public_address


def main(argv: list[str]) -> None:
    objects, port = argv[0], int(argv[1])
    allowed = int(argv[2]) if len(argv) > 2 else None

    def policy(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, p: int) -> bool:
        if allowed is not None and ip == ipaddress.ip_address("127.0.0.1") and p == allowed:
            return True
        return is_public_address(ip)

    app = create_app(ModelRegistry(FolderStore(objects)),
                     ServeOptions(allow_url_fetch=True, url_policy=policy, fetch_timeout_s=3.0))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
