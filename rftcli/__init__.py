"""rftcli: reinforcement fine-tuning of vision-language models from the command line.

Each stage is a library function `run(config) -> result` in `rftcli.stages.<name>`; the `rftcli`
command is a thin Typer layer over them.
"""

__version__ = "0.1.0"
