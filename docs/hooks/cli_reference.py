"""mkdocs hook: the command-line reference page (``cli.md``), generated at build time.

It walks the click command tree of the Typer app (:func:`lambdanet.cli.main.build_command`, the
tree ``lambdanet --help`` renders) and writes, for every command and sub-command, its help
text, usage line, arguments and options with their defaults and limits. Nothing of it is
written by hand, so the page cannot drift from the CLI: a new command or option appears at the
next ``mkdocs build``. Named in ``mkdocs.yml`` under ``hooks:``; ``exclude_docs`` keeps this file
out of the site.
"""

from __future__ import annotations

import html
import re
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "cli.md"
PROG = "lambdanet"

INTRO = """\
# Command-line reference

Every `lambdanet` command, sub-command, argument and option, generated from the CLI itself when
this site is built (the same text as `lambdanet COMMAND --help`). Every command also takes
`--help`. The rules every command follows (`--json`, `--out`, one-line errors, exit codes) are in
[CLI conventions, exit codes and errors](errors.md); the training config is in
[Configuration](configuration.md).
"""

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")
_EXTRA = re.compile(r"^(?:(.*?)\s{2})?\[([^\[\]]*)\]$", re.DOTALL)


def markdown_text(text: str) -> str:
    """Help text (plain, with rich's ``\\[`` escapes) as Markdown that shows it as written."""
    text = text.replace("\\[", "[")
    text = html.escape(text, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _split_extra(help_text: str) -> tuple[str, str]:
    """``("Number of workers K.", "default: 1; x>=1")`` from click's ``"…  [default: 1; x>=1]"``."""
    match = _EXTRA.match(help_text)
    if match is None:
        return help_text, ""
    return match.group(1) or "", match.group(2)


def _anchor(path: list[str]) -> str:
    return "-".join(path)


def _params_tables(command: Any, ctx: Any) -> list[str]:
    arguments: list[str] = []
    options: list[str] = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        text, extra = _split_extra(help_text or "")
        cells = [f"`{names}`", markdown_text(text) or " ", markdown_text(extra) or " "]
        row = "| " + " | ".join(cells) + " |"
        (arguments if param.param_type_name == "argument" else options).append(row)
    lines: list[str] = []
    if arguments:
        lines += ["**Arguments**", "", "| argument | description | required, default, limits |",
                  "| --- | --- | --- |", *arguments, ""]
    if options:
        lines += ["**Options**", "", "| option | description | default, limits |",
                  "| --- | --- | --- |", *options, ""]
    return lines


def _command_section(command: Any, ctx: Any, path: list[str]) -> list[str]:
    from typer import _click as click  # typer >= 0.29 vendors click

    title = " ".join(path)
    level = "#" * min(len(path) + 1, 4)
    lines = [f"{level} {title} {{#{_anchor(path)}}}", ""]
    if command.help:
        for paragraph in command.help.split("\n\n"):
            if paragraph.strip():
                lines += [markdown_text(" ".join(paragraph.split())), ""]
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines += ["```text", usage, "```", ""]
    subcommands = getattr(command, "commands", {})
    if subcommands:
        lines += ["**Commands**", "", "| command | what it does |", "| --- | --- |"]
        for name in command.list_commands(ctx):
            sub = subcommands[name]
            if getattr(sub, "hidden", False):
                continue
            short = sub.get_short_help_str(limit=1000)
            lines.append(f"| [{' '.join([*path, name])}](#{_anchor([*path, name])}) | {markdown_text(short)} |")
        lines.append("")
    lines += _params_tables(command, ctx)
    for name in command.list_commands(ctx) if subcommands else []:
        sub = subcommands[name]
        if getattr(sub, "hidden", False):
            continue
        sub_ctx = click.Context(sub, info_name=name, parent=ctx)
        lines += _command_section(sub, sub_ctx, [*path, name])
    return lines


def render() -> str:
    """The whole page as Markdown."""
    from typer import _click as click  # typer >= 0.29 vendors click

    from lambdanet.cli.main import build_command

    root = build_command()
    ctx = click.Context(root, info_name=PROG)
    return "\n".join([INTRO, *_command_section(root, ctx, [PROG])]).rstrip() + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated page to the site's files (nothing is written under ``docs/``)."""
    files.append(File.generated(config, PAGE, content=render()))
    return files


def on_serve(server: Any, config: MkDocsConfig, builder: Any) -> Any:
    """``mkdocs serve``: rebuild when the CLI's sources change."""
    from pathlib import Path

    import lambdanet.cli

    server.watch(str(Path(lambdanet.cli.__file__).parent))
    return server
