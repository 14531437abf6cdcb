"""MkDocs hooks of the reference pages: the command-line reference, generated from the click commands themselves
(so it cannot drift from ``--help``: per command its help, usage and a table of every option with its type, default
and help); and Sphinx roles in docstrings (``:func:`evaluate```) shown as code, not as literal role text."""

from __future__ import annotations

import html
import re
from typing import Any

import click

MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (HTML escaped: ``runs/<date>`` stays visible)."""
    return html.escape(" ".join(str(text).split())).replace("|", "&#124;")


def _default(param: click.Parameter) -> str:
    value = param.default
    if isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
        return "off" if not value else "on"
    if value is None or value == () or type(value).__name__ == "Sentinel" or callable(value):
        return ""
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _command(prog: str, name: str, command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=f"{prog} {name}")
    lines = [f"## `{prog} {name}`", "", html.escape(command.help or "").strip(), "",
             f"```text\n{command.get_usage(ctx)}\n```", "", "| option | type | default | meaning |",
             "| --- | --- | --- | --- |"]
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        required = " (required)" if param.required else ""
        lines.append(f"| {names}{required} | {_cell(param.type.name)} | {_cell(_default(param))} | "
                     f"{_cell(param.help or '')} |")
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["", "Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in arguments) + "."]
    return [*lines, ""]


def cli_reference() -> str:
    """The reference of every command of ``aigrobust``, as Markdown."""
    from aigrobust.cli import cli

    ctx = click.Context(cli, info_name="aigrobust")
    out: list[str] = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is not None and not command.hidden:
            out += _command("aigrobust", name, command)
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the generated reference."""
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown


ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):(<code>|`)")


def on_page_content(page_html: str, **_: Any) -> str:
    """Drop the role prefix that mkdocstrings leaves in front of a cross-reference's code."""
    return ROLE.sub(r"\1", page_html)
