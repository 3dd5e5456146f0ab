"""The ``lambdanet`` command line (typer + rich).

Each command group lives in its own module with a ``register(app)`` function; this module
builds the app and maps every :class:`LambdanetError` to one line on stderr and its exit code
— never a traceback. A command whose optional dependency is not installed answers with one
line naming the extra and its ``pip install`` command (exit 2).

Help is rendered by rich; help texts are plain text (a ``[…]``, ``*`` or ``<…>`` in one is shown
as written, never read as markup), each paragraph re-flowed to the terminal, and every
placeholder is a plain upper-case word: ``--params PATH``, ``--workers INTEGER``, ``DATA``, flags
with none.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.markup import escape
from typer import _click as click  # typer >= 0.29 vendors click
from typer.core import TyperArgument, TyperOption

from lambdanet.errors import Interrupted, LambdanetError, MissingExtra

app = typer.Typer(
    name="lambdanet",
    help="Train neural networks on serverless functions and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_COMMAND_MODULES = ("train", "runs", "models", "predict", "serve", "report", "watch", "tune", "plan")

# The optional extras of pyproject.toml: each importable package -> its extra (a test checks that
# every requirement of every extra is here). Transitive ones (starlette, botocore) are listed
# too: whichever is imported first is the one a missing extra is reported by.
EXTRA_OF: dict[str, str] = {
    "redis": "redis",
    "boto3": "aws", "botocore": "aws", "s3fs": "aws", "fsspec": "aws", "aws_durable_execution_sdk_python": "aws",
    "lithops": "lithops",
    "torch": "torch", "functorch": "torch", "torchgen": "torch",
    "optuna": "tune", "sqlalchemy": "tune", "alembic": "tune",
    "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "uvloop": "serve", "httptools": "serve",
    "orjson": "serve", "multipart": "serve", "python_multipart": "serve", "prometheus_client": "serve",
    "mangum": "serve", "httpx": "serve", "fastapi_offline": "serve",
}


def package_version() -> str:
    """lambdanet's version from the installed package's metadata (the source tree's when it is
    run without being installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lambdanet")
    except PackageNotFoundError:
        from lambdanet import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lambdanet {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print lambdanet's version and exit."),
) -> None:
    """Train neural networks on serverless functions and serve them."""


def missing_extra(exc: BaseException | None) -> tuple[str, str] | None:
    """``(package, extra)`` when ``exc`` (or an exception it was raised from) is the import of an
    optional extra's package failing; None otherwise."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ModuleNotFoundError):
            package = (exc.name or "").split(".")[0]
            if package in EXTRA_OF:
                return package, EXTRA_OF[package]
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def pip_install(extra: str) -> str:
    """The command that adds ``extra`` to this install: ``pip install 'lambdanet[extra]'``, or,
    for an install from a clone (``pip install -e .``), the same from the clone's folder (the
    package is not on an index under that name)."""
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlsplit

    for dist in distributions(name="lambdanet"):  # a source tree's egg-info may come first
        try:
            origin = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = str(origin.get("url", ""))
        if url.startswith("file://") and isinstance(origin.get("dir_info"), dict):
            editable = "-e " if origin["dir_info"].get("editable") else ""
            return f"pip install {editable}'{unquote(urlsplit(url).path)}[{extra}]'"
    return f"pip install 'lambdanet[{extra}]'"


_PIP_HINT = re.compile(r"pip install 'lambdanet\[(\w+)\]'")


def missing_extra_message(what: str, package: str, extra: str) -> str:
    return f"{what} needs the '{extra}' extra (the '{package}' package is not installed): {pip_install(extra)}"


def _register_all() -> None:
    """Import every command module; one whose optional extra is missing gets a stub command that
    says which extra to install (so ``pip install lambdanet`` alone still has a working CLI)."""
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lambdanet.cli.{name}")
        except ModuleNotFoundError as exc:
            found = missing_extra(exc)
            if found is None:
                raise
            _register_stub(name, *found)
            continue
        register: Callable[[typer.Typer], None] = module.register
        register(app)


def _register_stub(command: str, package: str, extra: str) -> None:
    def stub() -> None:
        raise MissingExtra(missing_extra_message(f"'lambdanet {command}'", package, extra))

    app.command(command, help=f"(needs the '{extra}' extra: {pip_install(extra)})",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(stub)


_register_all()


# ---- help placeholders ------------------------------------------------------------------------
class _PlainArgument(TyperArgument):
    """An argument shown by its upper-case name alone (``DATA``; ``[RUN]...`` when optional and
    repeatable), not ``{data}`` and ``<str>``."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": ""}


def _option_metavar(option: TyperOption, ctx: click.Context) -> str:
    """``<int range>`` -> ``INTEGER``, ``<list[Path]>`` -> ``PATH``, a flag -> nothing."""
    if option.is_flag or option.count:
        return ""
    label = option.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[len("list["):-1]
    label = label.removesuffix(" range")
    return _TYPE_WORDS.get(label.lower(), label.upper())


def plain_text(text: str) -> str:
    """A help text as rich shows it verbatim: each paragraph on one line (rich wraps it to the
    terminal), markup escaped."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(escape(" ".join(p.split())) for p in paragraphs)


def tidy_help(command: click.Command) -> None:
    """Plain help for ``command`` and its sub-commands: help texts shown as written, and every
    argument and option (``--help`` too) with a plain placeholder where none was set by hand."""
    ctx = click.Context(command, info_name=command.name)
    if command.help:
        command.help = plain_text(command.help)
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperArgument | TyperOption) and param.help:
            param.help = plain_text(param.help)
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
            param.__class__ = _PlainArgument
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = _option_metavar(param, ctx)
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


def build_command() -> click.Command:
    """The click command tree of :data:`app`, with plain help (:func:`tidy_help`)."""
    command = typer.main.get_command(app)
    tidy_help(command)
    return command


# ---- running ----------------------------------------------------------------------------------
def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(code)


def _command_words(command: click.Command, argv: Sequence[str]) -> str:
    """``lambdanet models export`` for argv ``["models", "export", …]``: the command path named."""
    words = ["lambdanet"]
    for token in argv:
        commands: dict[str, Any] = getattr(command, "commands", {})
        if token not in commands:
            break
        words.append(token)
        command = commands[token]
    return " ".join(words)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = build_command()
    try:
        code = command.main(args=args, prog_name="lambdanet", standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) comes back as a return value here
            raise SystemExit(code)
    except LambdanetError as exc:
        found = missing_extra(exc.__cause__)  # an adapter's or a strategy's import that failed
        if found is not None:
            fail(missing_extra_message(f"'{_command_words(command, args)}'", *found), MissingExtra.exit_code)
        message = str(exc)
        if isinstance(exc, MissingExtra):  # the install command that works for this install
            message = _PIP_HINT.sub(lambda m: pip_install(m.group(1)), message)
        fail(message, exc.exit_code)
    except ModuleNotFoundError as exc:  # an optional extra's package, imported by the command
        found = missing_extra(exc)
        if found is None:
            raise
        fail(missing_extra_message(f"'{_command_words(command, args)}'", *found), MissingExtra.exit_code)
    except KeyboardInterrupt:
        fail(str(Interrupted("interrupted")), Interrupted.exit_code)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # `lambdanet` or `lambdanet runs` alone: the help
        text = exc.format_message()
        if text.strip():  # without rich, click hands the help over as the message
            typer.echo(text)
        raise SystemExit(0) from None
    except click.exceptions.UsageError as exc:
        fail(exc.format_message().replace("\n", " "), 2)
    except click.exceptions.ClickException as exc:
        fail(exc.format_message().replace("\n", " "), exc.exit_code)


if __name__ == "__main__":
    main()
