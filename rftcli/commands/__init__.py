"""The bodies of rftcli's commands, grouped by subject; `rftcli.cli` builds the Typer app and registers them.

    base        what every command uses: the consoles, one-line failures, a config from defaults < YAML < flags
    data        prepare-data, check-rewards
    sampling    rollout, score
    training    sft-coldstart, train-grpo, merge
    evaluation  eval
    machine     plan, doctor

Each command builds its stage's frozen config, calls the stage's `run`, and prints a rich summary; heavy
libraries are imported inside the commands so `rftcli --help` stays instant.
"""
