"""``lambdanet serve``: the prediction service (FastAPI + uvicorn) over the model registry.

The defaults of the serving options come from :class:`lambdanet.serve.options.ServeOptions`
(written once there).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import typer

from lambdanet.serve.options import DEFAULTS


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        registry: str | None = typer.Option(
            None, "--registry", help="Object-store URL of the registry (a folder or s3://bucket/prefix); "
                                     "default: $LAMBDANET_OBJECTS or ~/.lambdanet/objects."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8000, "--port", help="Port to listen on (0-65535)."),
        api_key: str | None = typer.Option(
            None, "--api-key",
            help="Require this key (X-API-Key or Authorization: Bearer) on every route but /v2/health; "
                 "default: $LAMBDANET_API_KEY."),
        allow_url_fetch: bool = typer.Option(
            DEFAULTS.allow_url_fetch, "--allow-url-fetch",
            help="Enable GET /image?image=URL (public http(s) URLs only)."),
        max_batch_size: int = typer.Option(DEFAULTS.max_batch_size, "--max-batch-size",
                                           help="Images per forward pass (>= 1)."),
        max_wait_ms: float = typer.Option(
            DEFAULTS.max_wait_ms, "--max-wait-ms",
            help="How long a pass that starts from idle may wait for requests still being "
                 "uploaded (>= 0; 0: never wait, batch only what queued during the previous pass)."),
        no_batching: bool = typer.Option(not DEFAULTS.batching, "--no-batching",
                                         help="One forward pass per request."),
        inline_forward_ms: float = typer.Option(
            DEFAULTS.inline_forward_ms, "--inline-forward-ms",
            help="Batch sizes measured (at model load) faster than this run on the event loop, "
                 "not in a thread (0: always a thread)."),
        max_request_bytes: int = typer.Option(DEFAULTS.max_request_bytes, "--max-request-bytes",
                                              help="Larger request bodies get 413 (>= 1)."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
        access_log: bool = typer.Option(
            False, "--access-log/--no-access-log",
            help="uvicorn's line per request (at --log-level info or below; it costs CPU on every request)."),
    ) -> None:
        """Serve the registry's models: Open Inference Protocol v2, /predict, a photo page at /."""
        import uvicorn

        from lambdanet import adapters
        from lambdanet.errors import ConfigError
        from lambdanet.registry import ModelRegistry
        from lambdanet.serve.app import create_app
        from lambdanet.serve.options import ServeOptions
        from lambdanet.serve.process import tune_server_process
        from lambdanet.settings import Settings

        checks = [(0 <= port <= 65535, f"--port {port}: use 0-65535"),
                  (max_batch_size >= 1, f"--max-batch-size {max_batch_size}: use 1 or more"),
                  (max_wait_ms >= 0, f"--max-wait-ms {max_wait_ms}: use 0 or more"),
                  (inline_forward_ms >= 0, f"--inline-forward-ms {inline_forward_ms}: use 0 or more"),
                  (max_request_bytes >= 1, f"--max-request-bytes {max_request_bytes}: use 1 or more")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        settings = Settings.from_env()
        url = registry or settings.objects_url
        objects = adapters.open_objects(url)
        options = ServeOptions(api_key=api_key or settings.api_key, allow_url_fetch=allow_url_fetch,
                               max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                               batching=not no_batching, max_request_bytes=max_request_bytes,
                               inline_forward_ms=inline_forward_ms)
        application = create_app(ModelRegistry(objects), options)
        sock = listen_socket(host, port)  # before saying where it serves: a busy port is one line
        bound_port = sock.getsockname()[1]  # --port 0: the port the system chose
        shown_host = f"[{host}]" if ":" in host else host
        typer.echo(f"serving {adapters.redact(url)} on http://{shown_host}:{bound_port}/ "
                   f"(docs at /docs{', API key required' if options.api_key else ''})", err=True)
        level = log_level.lower()
        tune_server_process()
        # httptools and uvloop: the fastest HTTP parser and event loop uvicorn offers (a server's
        # CPU per request is mostly HTTP and routing, not the forward pass). The access log is off
        # unless asked for: formatting and writing a line per request costs about as much CPU as
        # the MLP's forward pass (docs/benchmarks.md; Prometheus' /metrics counts every request anyway).
        config = uvicorn.Config(application, host=host, port=bound_port, log_level=level, http="httptools",
                                loop="uvloop", access_log=access_log)
        server_on_socket(config).run(sockets=[sock])


def server_on_socket(config: Any) -> Any:
    """uvicorn's server for a socket bound beforehand, with its "Uvicorn running on …" line (which
    uvicorn leaves to whoever bound the socket). uvicorn is imported here: it is the serve extra's."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if sockets and self.started:
                self._log_started_message(sockets)

    return Server(config)


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (what uvicorn would bind, SO_REUSEADDR included), or
    one line: :class:`Unavailable` (exit 3) when the port is taken or not ours to take,
    :class:`ConfigError` (exit 2) when ``host`` is no address of this machine."""
    from lambdanet.errors import ConfigError, Unavailable

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(f"cannot serve on {where}: the port is already in use (another server?); "
                              "stop it or pick another --port") from None
        if exc.errno == errno.EACCES:
            raise Unavailable(f"cannot serve on {where}: permission denied (ports below 1024 need root); "
                              "pick another --port") from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror or exc})") from None
        raise Unavailable(f"cannot serve on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
