"""Commands on data: prepare-data makes a dataset table, check-rewards self-tests the answer rewards on one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rftcli.commands.base import errors_as_messages, fail, make_config, out_console, stage_defaults, summary_table
from rftcli.options import ConfigOpt, DatasetOpt, LimitOpt, OutOpt, OverwriteOpt, RewardOpt, SeedOpt

# ---------------------------------------------------------------- prepare-data
PD = stage_defaults("prepare_data")


def prepare_data(
    ctx: typer.Context,
    out: OutOpt = None,
    task: Annotated[str | None, typer.Option(
        help="Built-in synthetic task: counting, comparison, arithmetic, grounding.")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help=(
        "File or folder to convert: .jsonl, .json, .csv/.tsv, .parquet, a datasets save_to_disk folder, "
        "images with a labels file, the Geometry3K folder."))] = None,
    format: Annotated[str, typer.Option(
        "--format", help="Input layout: auto, rows, llava, mathvista, geometry3k, clevr, refcoco, scienceqa, aokvqa, "
        "chartqa, vqa, mmbench, ai2d, wemath, ocrbench.")] = PD.format,
    num: Annotated[int, typer.Option(help="Rows to generate for --task.")] = PD.num,
    task_options: Annotated[list[str] | None, typer.Option(
        "--task-option", help="Task knob key=value, repeatable (see each task's docstring).")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", help="Rename input column src=dst, repeatable.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt for rows without one: think or your text.")] = None,
    instruction: Annotated[str | None, typer.Option(help=(
        "Instruction for prompts: think (default), answer, boxed, none, your text, or a template with "
        "{question}."))] = None,
    question: Annotated[str | None, typer.Option(help="Prompt for input rows that have none.")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Folder relative image paths start from.")] = None,
    allow_outside_paths: Annotated[bool, typer.Option(
        "--allow-outside-paths", help="Let image paths in the data leave that folder (.., absolute paths).")] = False,
    max_pixels: Annotated[int | None, typer.Option(help="Shrink larger images to this many pixels.")] = None,
    min_pixels: Annotated[int | None, typer.Option(help="Enlarge smaller images to this many pixels.")] = None,
    max_image_pixels: Annotated[int, typer.Option(
        help="Refuse images above this many pixels (decompression-bomb guard).")] = PD.max_image_pixels,
    video_frames: Annotated[int, typer.Option(help="Frames sampled from each video.")] = PD.video_frames,
    box_format: Annotated[str, typer.Option(help="Source boxes: auto, xyxy or xywh.")] = PD.box_format,
    box_units: Annotated[str, typer.Option(help="Source boxes: auto, pixel, normalized, norm1000.")] = PD.box_units,
    dedupe: Annotated[bool, typer.Option(
        "--dedupe/--keep-duplicates", help="Drop input rows repeating an earlier row's content.")] = PD.dedupe,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Write good rows and a rejects table instead of stopping at a bad row.")] = False,
    rejects: Annotated[Path | None, typer.Option(
        help="Rejects Parquet for --skip-bad (default <out>.rejects.parquet).")] = None,
    split_from: Annotated[str, typer.Option(help=(
        "Splits of --input rows: source (the source's own where it has one, else id hash) or hash."))] = PD.split_from,
    drop_cross_split_duplicates: Annotated[bool, typer.Option(
        "--drop-cross-split-duplicates", help="Drop rows repeating an earlier split's content (train, val, test).")] = False,
    exclude: Annotated[list[Path] | None, typer.Option(help=(
        "Dataset file whose items (prompt, images, answer) must not appear in the output; repeatable."))] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of rows in the test split.")] = PD.test_fraction,
    val_fraction: Annotated[float, typer.Option(help="Share of rows in the val split.")] = PD.val_fraction,
    limit: LimitOpt = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle rows (seeded by --seed).")] = False,
    shuffle_buffer: Annotated[int, typer.Option(help="Rows held for --shuffle.")] = PD.shuffle_buffer,
    seed: SeedOpt = PD.seed,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Make a dataset Parquet from a built-in task or from data in a published layout.

    Example: rftcli prepare-data --task counting --num 2000 --out data/counting.parquet
    """
    from rftcli.stages import prepare_data as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    out_console.print(summary_table(f"dataset {result.path}", stage.describe(result)))


# ---------------------------------------------------------------- check-rewards
def check_rewards(
    ctx: typer.Context,
    dataset: DatasetOpt = None,
    out: OutOpt = None,
    rewards: RewardOpt = None,
    min_agreement: Annotated[float, typer.Option(
        help="Lowest agreement accepted per answer type and reward; below it the exit code is 1.")
    ] = stage_defaults("check_rewards").min_agreement,
    split: Annotated[str | None, typer.Option("--split", help="Check only this split (default: all rows).")] = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Self-test of answer rewards on your data: right answers in the forms models write must be paid, wrong
    and hacked ones (a neighbour, digits in a word, two answers, a box at IoU 0.1) must not -> JSON report.

    Run it on a converted dataset before a long run (default rewards: accuracy, count, iou).

    Example: rftcli check-rewards -d data/train.parquet -r accuracy -r count -r iou --out out/check.json
    """
    from rftcli.stages import check_rewards as stage

    cfg = make_config(ctx, stage.Config, config, locals().copy())
    with errors_as_messages():
        result = stage.run(cfg)
    t = Table(title=f"reward self-test {cfg.dataset} ({result.rows} rows, {result.forms} completions)",
              title_justify="left")
    for column in ("answer type", "reward", "rows", "n/a rows", "checks", "agreement", "first failures"):
        t.add_column(column)
    for c in result.cells:
        shown = "; ".join(f"{f['id']}: {f['form']} ({'paid' if f['expected'] == 'not paid' else 'not paid'})"
                          for f in c.failures[:3])
        t.add_row(c.answer_type, c.reward, str(c.rows), str(c.na_rows), str(c.checks),
                  "-" if not c.checks else f"{c.agreement:.1%}", shown)
    out_console.print(t)
    if result.skipped:
        out_console.print("rows not rendered: " + ", ".join(f"{k} {v}" for k, v in result.skipped.items()))
    out_console.print(f"report: {result.path}")
    if not result.passed:
        fail(f"agreement below --min-agreement {cfg.min_agreement:g}; the report lists the failures", code=1)
