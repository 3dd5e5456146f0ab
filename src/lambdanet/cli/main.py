"""The ``lambdanet`` command line (typer + rich).

Each command group lives in its own module with a ``register(app)`` function; this module
builds the app and maps every :class:`LambdanetError` to one line on stderr and its exit code
— never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from lambdanet.errors import Interrupted, LambdanetError, MissingExtra

app = typer.Typer(
    name="lambdanet",
    help="Train neural networks on serverless functions and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = ("train", "runs", "models", "predict", "serve", "report", "watch", "tune")


def _register_all() -> None:
    """Import every command module; one whose optional extra is missing gets a stub command that
    says which extra to install (so ``pip install lambdanet`` alone still has a working CLI)."""
    import importlib

    from lambdanet.adapters import EXTRAS

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lambdanet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lambdanet.cli.{name}":
                continue  # command group not built yet
            vendor = (exc.name or "").split(".")[0]
            if vendor not in EXTRAS:
                raise
            _register_stub(name, vendor, EXTRAS[vendor])
            continue
        register: Callable[[typer.Typer], None] = module.register
        register(app)


def _register_stub(command: str, vendor: str, extra: str) -> None:
    def stub() -> None:
        raise MissingExtra(f"'lambdanet {command}' needs the '{vendor}' package: pip install 'lambdanet[{extra}]'")

    app.command(command, help=f"(needs: pip install 'lambdanet[{extra}]')",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(stub)


_register_all()


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) comes back as a return value here
            raise SystemExit(code)
    except LambdanetError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail(str(Interrupted("interrupted")), Interrupted.exit_code)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        fail("aborted", 130)
    except Exception as exc:  # usage errors of typer's (vendored) click
        usage, click_error = _click_exception_types()
        if isinstance(exc, usage):
            fail(exc.format_message().replace("\n", " "), 2)  # type: ignore[attr-defined]
        if isinstance(exc, click_error):
            fail(exc.format_message().replace("\n", " "), exc.exit_code)  # type: ignore[attr-defined]
        raise


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """UsageError and ClickException of typer's vendored click (typer >= 0.29) and of click itself."""
    usage: list[type] = []
    other: list[type] = []
    for module_name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = __import__(module_name, fromlist=["UsageError"])
        except ImportError:
            continue
        usage.append(module.UsageError)
        other.append(module.ClickException)
    return tuple(usage), tuple(other)

if __name__ == "__main__":
    main()
