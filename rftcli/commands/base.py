"""What every command uses: the two consoles, the one-line `error:` exit, turning exceptions into those
lines (`errors_as_messages`), building a stage's config from defaults < `--config` YAML < flags, and the
two-column summary table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rftcli.config import build_config

console = Console(stderr=True)
out_console = Console()

DEBUG = {"on": False}
"""Set by `rftcli --debug`: failures raise with their traceback instead of printing one line."""


def fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    # Escaped: file names and messages may hold square brackets that rich would read as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input, settings, an existing or unwritable output: one line, exit 2. A full disk: one line naming
    the output, exit 1. Anything else is internal: one line, exit 1, and the traceback with --debug."""
    from rftcli.atomic import checked_outputs
    from rftcli.errors import first_line, write_failure

    since = len(checked_outputs())  # outputs checked from here on are this command's
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:
        if DEBUG["on"]:
            raise
        failure = write_failure(err, since)
        if failure is not None:
            fail(*failure)
        if isinstance(err, (ValueError, FileExistsError, FileNotFoundError, ImportError)):
            fail(first_line(err), code=2)
        fail(f"internal error ({type(err).__name__}): {first_line(err)}; rerun with --debug for the traceback",
             code=1)


def make_config(ctx: typer.Context, cls: type, config_path: Path | None, params: dict[str, Any],
                renames: dict[str, str] | None = None) -> Any:
    """Build `cls` from its defaults, the YAML file, and the flags actually given on the command line."""
    renames = renames or {}
    flags = {}
    for name, value in params.items():
        if name in ("ctx", "config", "stage"):
            continue
        source = ctx.get_parameter_source(name)
        # Compared by name: typer may carry its own copy of click's ParameterSource enum.
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            if isinstance(value, list):
                value = tuple(value)
            flags[renames.get(name, name)] = value
    with errors_as_messages():
        try:
            return build_config(cls, config_path, flags)
        except TypeError as err:
            missing = re.findall(r"'(\w+)'", str(err)) if "required" in str(err) else []
            if not missing:
                raise
            fail(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)} (a flag or a --config setting)")


def stage_defaults(module: str):
    """The default config of `rftcli.stages.<module>`, for the defaults `--help` shows."""
    from importlib import import_module

    from rftcli.config import defaults

    return defaults(import_module(f"rftcli.stages.{module}").Config)


def pct_or_dash(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def summary_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A command's closing summary: one (name, value) per row, floats to 4 significant digits."""
    t = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows:
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    return t
