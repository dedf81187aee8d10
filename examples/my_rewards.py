"""Custom reward functions for rftcli: plain functions with TRL's signature.

    rftcli score --rollouts out/rollouts.parquet -r accuracy=1 -r examples/my_rewards.py:brevity=0.1 --out out/s.parquet
    rftcli train-grpo ... -r accuracy=1 -r examples/my_rewards.py:brevity=0.1

`completions` are strings (score, eval) or chat messages (train-grpo); every dataset column arrives as
a keyword argument holding one value per completion. Return one float per completion, or None to
abstain.
"""

from rftcli.rewards import completion_text


def brevity(completions, **kwargs):
    """1.0 for answers under 40 characters, falling linearly to 0 at 200."""
    out = []
    for c in completions:
        n = len(completion_text(c))
        out.append(max(0.0, min(1.0, (200 - n) / 160)))
    return out


def answer_is_digit(completions, answer, **kwargs):
    """Abstain on rows whose ground truth is not a single digit; else 1.0 if the text ends with it."""
    return [None if not (a.isdigit() and len(a) == 1) else float(completion_text(c).rstrip().endswith(a))
            for c, a in zip(completions, answer, strict=True)]
