"""The eval report's charts and labels: lengths.png draws each model in a panel of its own, training.png
gives each run's loss its own axis and a KL panel that says when KL was off, and models given without
--label get short column labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftcli import report
from rftcli.stages.eval import Config, short_labels

Figure = pytest.importorskip("matplotlib.figure").Figure

SFT = {"loss": [(10.0, 2.5), (20.0, 0.4)]}
GRPO = {"loss": [(10.0, 0.01), (20.0, -0.02)], "reward": [(10.0, 0.6), (20.0, 0.9)]}


def test_lengths_chart_has_a_panel_per_model_so_none_hides_another():
    lengths = {"base": [3, 4, 4], "sft": [20, 21, 22], "grpo": [20, 21, 22]}  # sft and grpo alike
    fig = report.lengths_figure(Figure, lengths, limit=48)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["base", "sft", "grpo"]
    for ax, values in zip(fig.axes, lengths.values(), strict=True):
        heights = [p.get_height() for p in ax.patches]
        assert sum(heights) == len(values)  # every response of that model, in its own panel
    assert fig.axes[-1].get_xlabel() == "response tokens (dashed: max_new_tokens 48)"


def test_training_chart_gives_each_loss_its_own_axis_and_says_kl_was_off():
    curves = {"sft": SFT, "grpo": GRPO}
    assert report.training_panels(curves) == [("reward", ["grpo"]), ("kl", []), ("loss: sft", ["sft"]),
                                              ("loss: grpo", ["grpo"])]
    fig = report.training_figure(Figure, curves)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["reward", "kl", "loss: sft", "loss: grpo"]
    kl = fig.axes[1]
    assert [t.get_text() for t in kl.texts] == [report.KL_OFF] and not kl.lines
    sft_loss, grpo_loss = fig.axes[2], fig.axes[3]
    assert sft_loss.get_ylim() != grpo_loss.get_ylim()  # GRPO's loss is not flattened on SFT's scale
    assert grpo_loss.get_ylim()[1] < 0.1


def test_training_chart_draws_kl_when_logged():
    curves = {"grpo": {**GRPO, "kl": [(10.0, 0.001), (20.0, 0.003)]}}
    fig = report.training_figure(Figure, curves)
    kl = fig.axes[[ax.get_title() for ax in fig.axes].index("kl")]
    assert not kl.texts and list(kl.lines[0].get_ydata()) == [0.001, 0.003]


def test_metrics_files_read_back_into_the_training_chart(tmp_path):
    import json

    paths = []
    for name, curve in (("sft", SFT), ("grpo", GRPO)):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "metrics.jsonl"
        steps = sorted({s for series in curve.values() for s, _ in series})
        path.write_text("".join(json.dumps({"step": s, **{k: dict(v)[s] for k, v in curve.items()}}) + "\n"
                                for s in steps))
        paths.append(path)
    curves = {label: report.read_training_metrics(p) for label, p in zip(report.metrics_labels(paths), paths,
                                                                          strict=True)}
    assert curves == {"sft": SFT, "grpo": GRPO}
    report.training_figure(Figure, curves).savefig(tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 0


def test_eval_labels_without_label_are_short(tmp_path):
    (tmp_path / "runs" / "a" / "grpo").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "grpo").mkdir(parents=True)
    (tmp_path / "out" / "sft").mkdir(parents=True)
    assert short_labels(["Qwen/Qwen2.5-VL-3B-Instruct", "builtin:small-qwen2.5-vl", str(tmp_path / "out" / "sft")]
                        ) == ["Qwen2.5-VL-3B-Instruct", "small-qwen2.5-vl", "sft"]
    assert short_labels([str(tmp_path / "runs" / "a" / "grpo"), str(tmp_path / "runs" / "b" / "grpo")]) == [
        "a/grpo", "b/grpo"]
    config = Config(dataset=Path("data.parquet"), models=("builtin:tiny-qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
                    out=tmp_path / "eval")
    assert config.model_labels == ["tiny-qwen2.5-vl", "Qwen2.5-VL-7B-Instruct"]
    assert Config(dataset=Path("d.parquet"), models=("builtin:tiny-qwen2.5-vl",), labels=("base",),
                  out=tmp_path / "e").model_labels == ["base"]
