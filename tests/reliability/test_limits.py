"""Limits that protect the machine (rftcli.limits, rftcli.atomic.refuse_input): an output that is one of its
command's inputs, a prompt over the prompt budget, an image over the pixel budget.

Every refusal ends the same way as any bad input: exit code 2, one `error:` line naming the file (and the
row and column where there is one), the inputs' bytes unchanged, nothing written.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.limits import DEFAULT_MAX_PIXELS, ImageShrinker, PromptBudget, apply_image_budget, context_length

runner = CliRunner()
TINY = "builtin:tiny-qwen2.5-vl"


def digest(path: Path) -> str:
    """Hash of a file, or of a folder's files (names and bytes), links not followed."""
    h = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in paths:
        h.update(str(p.relative_to(path.parent)).encode() + p.read_bytes())
    return h.hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused(args: list[str], folder: Path, inputs: list[Path], *expected: str) -> str:
    before = {p: digest(p) for p in inputs}
    files = listing(folder)
    result = runner.invoke(app, [str(a) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert {p: digest(p) for p in inputs} == before, "an input was changed"
    assert listing(folder) == files, "something was written"
    return lines[0]


# ---------------------------------------------------------------- output onto input

@pytest.fixture
def work(tmp_path, dataset, rollouts, tiny_model_dir, sft_adapter) -> dict[str, Path]:
    """Copies of every kind of input in one folder, so a refusal can be seen to leave them all alone."""
    out = {"dataset": tmp_path / "data.parquet", "rollouts": tmp_path / "rollouts.parquet",
           "model": tmp_path / "model", "adapter": tmp_path / "adapter", "raw": tmp_path / "raw.jsonl"}
    shutil.copy(dataset, out["dataset"])
    shutil.copy(rollouts, out["rollouts"])
    shutil.copytree(tiny_model_dir, out["model"])
    shutil.copytree(sft_adapter, out["adapter"])
    out["raw"].write_text('{"prompt": "How many?", "answer": "3"}\n')
    return out


# (command given the input paths and the --out, the input the output lands on)
ONTO_INPUT = {
    "prepare-data": (lambda w, o: ["prepare-data", "--input", w["raw"], "--out", o], "raw"),
    "score": (lambda w, o: ["score", "--rollouts", w["rollouts"], "-r", "accuracy", "--out", o], "rollouts"),
    "rollout": (lambda w, o: ["rollout", "-d", w["dataset"], "-m", w["model"], "--out", o], "dataset"),
    "rollout-model": (lambda w, o: ["rollout", "-d", w["dataset"], "-m", w["model"], "--out", o], "model"),
    "sft-coldstart": (lambda w, o: ["sft-coldstart", "-d", w["dataset"], "-m", w["model"], "--out", o], "model"),
    "train-grpo": (lambda w, o: ["train-grpo", "-d", w["dataset"], "-m", w["adapter"], "--out", o], "adapter"),
    "train-grpo-offline": (lambda w, o: ["train-grpo", "--rollouts", w["rollouts"], "-m", w["model"], "--out", o],
                           "rollouts"),
    "eval": (lambda w, o: ["eval", "-d", w["dataset"], "-m", w["model"], "--out", o], "dataset"),
    "merge": (lambda w, o: ["merge", "--adapter", w["adapter"], "--out", o], "adapter"),
    "check-rewards": (lambda w, o: ["check-rewards", "-d", w["dataset"], "-r", "accuracy", "--out", o], "dataset"),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("command", sorted(ONTO_INPUT))
def test_an_output_that_is_an_input_is_refused(command, overwrite, work, tmp_path):
    args, name = ONTO_INPUT[command]
    target = work[name]
    line = refused(args(work, target) + (["--overwrite"] if overwrite else []), tmp_path, list(work.values()),
                   f"the output is the input {target}", "with or without --overwrite")
    assert "pass --overwrite" not in line


@pytest.mark.parametrize("command", ["score", "rollout", "merge", "sft-coldstart"])
def test_an_output_that_reaches_an_input_through_a_link_is_refused(command, work, tmp_path):
    args, name = ONTO_INPUT[command]
    link = tmp_path / "link"
    link.mkdir()
    (link / "out").symlink_to(work[name])  # --out names the input through a link to it
    refused(args(work, link / "out") + ["--overwrite"], tmp_path, list(work.values()), "the output is the input")
    # ... and through a folder that is a link to the input's folder
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    refused(args(work, tmp_path / "alias" / work[name].name) + ["--overwrite"], tmp_path, list(work.values()),
            "the output is the input")


def test_an_input_inside_the_output_folder_or_its_work_folder_is_refused(work, tmp_path):
    out = tmp_path / "report"
    (out.with_name("report.parts")).mkdir()
    inside = out.with_name("report.parts") / "data.parquet"
    shutil.copy(work["dataset"], inside)
    refused(["eval", "-d", inside, "-m", work["model"], "--out", out, "--overwrite"], tmp_path,
            [*work.values(), inside], f"the input {inside} lies inside {out.with_name('report.parts')}")
    refused(["eval", "-d", work["dataset"], "-m", work["model"], "--out", tmp_path, "--overwrite"], tmp_path,
            list(work.values()), f"lies inside {tmp_path}")


def test_prepare_data_rejects_file_onto_its_input_is_refused(work, tmp_path):
    refused(["prepare-data", "--input", work["raw"], "--out", tmp_path / "o.parquet", "--skip-bad", "--rejects",
             work["raw"], "--overwrite"], tmp_path, list(work.values()), "the output is the input")


# ---------------------------------------------------------------- the prompt budget

def _with_prompt(dataset: Path, path: Path, row: int, prompt: str) -> Path:
    table = pq.read_table(dataset)
    prompts = table.column("prompt").to_pylist()
    prompts[row] = prompt
    i = table.column_names.index("prompt")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(prompts, pa.string())), path)
    return path


def test_the_budget_is_capped_at_the_context_length_and_counts_image_tokens(tiny_model_dir):
    assert context_length(str(tiny_model_dir)) == 4096  # the tiny model's max_position_embeddings
    budget = PromptBudget(str(tiny_model_dir), max_prompt_length=100_000, max_pixels=None, min_pixels=None)
    assert budget.tokens == 4096
    png = io.BytesIO()
    Image.new("RGB", (112, 112)).save(png, format="PNG")  # 8x8 patches of 14 px, merged 2x2: 16 tokens
    row = {"id": "a", "system": None, "prompt": "hi", "images": [{"bytes": png.getvalue(), "path": None}]}
    text_only = PromptBudget(str(tiny_model_dir), max_prompt_length=10_000, max_pixels=None, min_pixels=None)
    from rftcli.generation import prompt_length

    with_image = prompt_length(text_only.processor, row)
    without = prompt_length(text_only.processor, {**row, "images": []})
    assert with_image - without == 16 + 2  # 16 image tokens and <|vision_start|>/<|vision_end|> around them
    tight = PromptBudget(str(tiny_model_dir), max_prompt_length=with_image - 1, max_pixels=None, min_pixels=None)
    with pytest.raises(ValueError, match=rf"x.parquet: row 7, column 'prompt' \(id 'a'\): the prompt is {with_image} "
                                         r"tokens with its 1 image, over the prompt budget"):
        tight.check(Path("x.parquet"), [row], {"a": 7})
    PromptBudget(str(tiny_model_dir), max_prompt_length=with_image, max_pixels=None,
                 min_pixels=None).check(Path("x.parquet"), [row], {"a": 7})


def test_a_prompt_over_the_context_length_names_the_cap(dataset, tiny_model_dir, tmp_path):
    bad = _with_prompt(dataset, tmp_path / "bad.parquet", 5, "word " * 6000)
    line = refused(["rollout", "-d", bad, "-m", tiny_model_dir, "--out", tmp_path / "r.parquet", "--split", "all",
                    "--max-prompt-length", "100000"], tmp_path, [bad], f"{bad}: row 5, column 'prompt'",
                   "--max-prompt-length 100,000, capped at the model's context length")
    assert "4,096 tokens" in line


def test_a_five_megabyte_prompt_is_refused_without_tokenizing_it(dataset, tiny_model_dir, tmp_path):
    """A 5 MB prompt (a pasted document) made rollout grow to 12 GB; it is refused from its length in characters,
    in a child process whose peak memory is measured."""
    bad = _with_prompt(dataset, tmp_path / "bad.parquet", 3, ("lorem ipsum dolor sit amet " * 200_000)[:5_000_000])
    code = ("import resource, sys\nfrom rftcli.cli import app\n"
            "try:\n    app(args=sys.argv[1:], prog_name='rftcli')\n"
            "finally:\n    print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "rollout", "-d", str(bad), "-m", str(tiny_model_dir), "--out",
                           str(tmp_path / "r.parquet"), "--split", "all"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"})
    seconds = time.perf_counter() - started
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"{bad}: row 3, column 'prompt'" in lines[0] and "5,000,000 characters" in lines[0]
    peak = int(proc.stderr.split("peak_kb")[-1].split()[0]) * 1024
    assert peak < 2 << 30, f"peak memory {peak / 2**30:.2f} GiB"
    assert seconds < 120
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


# ---------------------------------------------------------------- the image budget

def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_processor_takes_the_pixel_limits_from_the_settings(tiny_model_dir):
    from rftcli.loading import load_processor

    processor = load_processor(str(tiny_model_dir))
    own = processor.image_processor.size.longest_edge
    assert own < DEFAULT_MAX_PIXELS
    assert apply_image_budget(processor, None, None) == own  # the default never raises the processor's own limit
    assert apply_image_budget(processor, 50_000, 1_000) == 50_000
    assert (processor.image_processor.size.longest_edge, processor.image_processor.size.shortest_edge) == (50_000, 1_000)
    big = load_processor(str(tiny_model_dir))
    big.image_processor.size = {"longest_edge": 12_845_056, "shortest_edge": 3136}  # Qwen2.5-VL's published limit
    assert apply_image_budget(big, None, None) == DEFAULT_MAX_PIXELS
    assert big.image_processor.size["longest_edge"] == DEFAULT_MAX_PIXELS
    with pytest.raises(ValueError, match="--min-pixels 2000000 is above the pixel budget of 12544"):
        apply_image_budget(load_processor(str(tiny_model_dir)), None, 2_000_000)


def test_images_over_the_budget_are_shrunk_and_counted_once_each():
    big, small = _png(900, 600), _png(40, 40)
    shrinker = ImageShrinker(10_000)
    rows = [[{"bytes": big, "path": None}], [{"bytes": small, "path": None}], [{"bytes": big, "path": "b.png"}]]
    out = [shrinker.images(r) for r in rows]
    assert shrinker.shrunk == 1  # one distinct image, in two rows
    assert out[1] is rows[1]  # nothing over the budget: the row is not touched
    with Image.open(io.BytesIO(out[0][0]["bytes"])) as img:
        assert img.size[0] * img.size[1] <= 10_000 and abs(img.size[0] / img.size[1] - 1.5) < 0.05
    assert out[2][0]["path"] == "b.png" and out[2][0]["bytes"] == out[0][0]["bytes"]


def test_rollout_stores_images_shrunk_to_the_budget(dataset, tiny_model_dir, tmp_path):
    table = pq.read_table(dataset)
    images = table.column("images").to_pylist()
    images[0] = [{"bytes": _png(600, 400), "path": None}]
    i = table.column_names.index("images")
    src = tmp_path / "big.parquet"
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(images, table.schema.field(i).type)), src)
    result = runner.invoke(app, ["rollout", "-d", str(src), "-m", str(tiny_model_dir), "--out",
                                 str(tmp_path / "r.parquet"), "--split", "all", "--limit", "3", "-n", "2",
                                 "--max-new-tokens", "2", "--max-pixels", "5000"])
    assert result.exit_code == 0, result.output
    assert "images shrunk" in result.output and "│ 1 " in result.output.split("images shrunk")[1].splitlines()[0]
    stored = pq.read_table(tmp_path / "r.parquet").column("images").to_pylist()
    with Image.open(io.BytesIO(stored[0][0]["bytes"])) as img:
        assert img.size[0] * img.size[1] <= 5000
    assert stored[2] == images[1]  # the images within the budget are stored as they came
