"""The `rftcli` command: a thin Typer layer. This module builds the app and registers the commands, whose bodies
live in `rftcli.commands` by subject. Each command builds its stage's frozen config (defaults < `--config`
YAML < flags), calls the stage's `run`, and prints a rich summary. Heavy libraries are imported inside
commands so `rftcli --help` stays instant.

Exit codes: 0 success; 2 bad usage, settings or input data, an existing output without --overwrite or an
output folder that cannot be written (one-line `error:` on stderr naming the file, row and column); 1 a
full disk (one line naming the output and how to continue) or an internal failure (one line; `rftcli
--debug ...` shows the traceback).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rftcli import __version__
from rftcli.commands import data, evaluation, machine, sampling, training
from rftcli.commands.base import DEBUG, errors_as_messages, fail, make_config, out_console  # noqa: F401

app = typer.Typer(help="Reinforcement fine-tuning of vision-language models, one stage per command.\n\n"
                       "Stages read and write files: dataset -> sft-coldstart -> rollout -> score -> train-grpo "
                       "-> merge -> eval.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        print(f"rftcli {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of failures.")] = False) -> None:
    """rftcli"""
    DEBUG["on"] = debug
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Silence library chatter that is not about the user's run."""
    import logging
    import warnings

    from rftcli.processor_compat import quiet_loading_notices

    # bitsandbytes' optional-kernel notice, DeepSpeed's "Setting accelerator to CPU", a deprecation PEFT triggers.
    quiet_loading_notices()
    # TRL prints a row whose rewards all abstained in full (its prompt, images, completion); rftcli has logged
    # each failing reward with its row number already.
    logging.getLogger("trl.trainer.grpo_trainer").addFilter(
        lambda record: not record.getMessage().startswith("All reward functions returned None"))
    # Deprecation notices addressed to library developers (renamed arguments inside transformers/peft).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl)\.")


# The commands, in the order `rftcli --help` lists them; their bodies live in rftcli.commands.
app.command("prepare-data")(data.prepare_data)
app.command("sft-coldstart")(training.sft_coldstart)
app.command("rollout")(sampling.rollout)
app.command("score")(sampling.score)
app.command("check-rewards")(data.check_rewards)
app.command("train-grpo")(training.train_grpo)
app.command("merge")(training.merge)
app.command("eval")(evaluation.eval_)
app.command("plan")(machine.plan)
app.command("doctor")(machine.doctor)


def run() -> None:  # pragma: no cover - console entry for `python -m rftcli`
    app(prog_name="rftcli", args=sys.argv[1:])
