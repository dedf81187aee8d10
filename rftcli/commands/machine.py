"""Commands about the machine: plan predicts a run's peak accelerator memory, doctor reports what is installed."""

from __future__ import annotations

from typing import Annotated

import typer

from rftcli.commands.base import errors_as_messages, out_console, summary_table


def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Versions, devices, 4-bit/vLLM/torchvision status and what rftcli would use here: paste it in bug reports.

    Example: rftcli doctor --json > doctor.json
    """
    import json

    from rftcli import doctor as lib

    with errors_as_messages():
        info = lib.report()
    if json_out:
        print(json.dumps(info, indent=2))
        return
    out_console.print(summary_table("rftcli doctor", lib.rows(info)))
