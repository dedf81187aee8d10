"""prepare-data on every input layout, written here in its public shape: adapters, bad input and
--skip-bad, images (EXIF, sizes, bombs), dedupe, splits and shuffling, the synthetic tasks."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.formats.readers import JsonItems
from rftcli.images import ImageProcessor, target_size, video_decoder
from rftcli.schema import read_table
from rftcli.stages import prepare_data
from rftcli.stages.prepare_data import BadRow, Config, assign_split, run

RED, BLUE, GREEN = (220, 20, 20), (20, 40, 220), (20, 180, 40)


def png(color=RED, size=(28, 28), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def rows_of(path: Path) -> list[dict]:
    return read_table(path, "dataset").table.to_pylist()


def meta(row: dict) -> dict:
    return json.loads(row["metadata"]) if row["metadata"] else {}


def image_of(row: dict, i: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(row["images"][i]["bytes"]))


def convert(tmp_path: Path, src: Path, **kw) -> tuple[prepare_data.Result, list[dict]]:
    out = tmp_path / "out" / "d.parquet"
    result = run(Config(out=out, input=src, overwrite=True, **kw))
    return result, rows_of(out)


# ---------------------------------------------------------------- containers

def test_json_array_csv_and_multi_image_rows(tmp_path):
    (tmp_path / "a.png").write_bytes(png(RED))
    (tmp_path / "b.png").write_bytes(png(BLUE))
    items = [
        {"id": "m1", "question": "Which image is red?", "images": ["a.png", "b.png"], "choices": ["first", "second"],
         "answer": "first"},
        {"id": "m2", "prompt": "Compare <image> with <image>.", "image_1": "a.png", "image_2": "b.png", "answer": 2},
    ]
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(items, indent=2))
    result, rows = convert(tmp_path, src, instruction="none")
    assert (result.container, result.layout, result.rows) == ("json", "rows", 2)
    assert [len(r["images"]) for r in rows] == [2, 2]
    assert image_of(rows[0], 1).getpixel((0, 0)) == BLUE
    assert rows[0]["prompt"] == "Which image is red?\nA. first\nB. second"
    assert rows[0]["answer"] == "A" and rows[0]["answer_type"] == "choice" and meta(rows[0])["raw_answer"] == "first"
    assert rows[1]["prompt"] == "Compare with ." and rows[1]["answer"] == "2"

    csv_src = tmp_path / "rows.csv"
    csv_src.write_text('id,question,image,choices,answer,source\n'
                       'c1,"Color, in one word?",a.png,,red,web\n'
                       'c2,Pick one,b.png,"[""blue"", ""red""]",blue,web\n')
    result, rows = convert(tmp_path, csv_src, instruction="none")
    assert (result.container, result.rows) == ("csv", 2)
    assert rows[0]["prompt"] == "Color, in one word?" and meta(rows[0]) == {"source": "web"}
    assert rows[1]["choices"] == ["blue", "red"] and rows[1]["answer"] == "A"


def test_datasets_save_to_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image()})
    imgs = [Image.new("RGB", (20, 20), c) for c in (RED, GREEN)]
    ds = datasets.Dataset.from_dict({"question": ["Color?", "Color now?"], "answer": ["red", "green"], "image": imgs},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dd"))

    result, rows = convert(tmp_path, tmp_path / "ds")
    assert (result.container, result.rows) == ("hf-disk", 2)
    assert image_of(rows[1]).getpixel((3, 3)) == GREEN and rows[1]["id"] == "ds-0000001"
    result, rows = convert(tmp_path, tmp_path / "dd")
    # each row keeps its DatasetDict split; the test row repeats a train row: reported, kept unless asked
    assert (result.rows, result.duplicates, result.splits) == (3, 0, {"train": 2, "test": 1})
    assert [(r["split"], meta(r)["source_split"]) for r in rows] == [("train", "train")] * 2 + [("test", "test")]
    assert result.cross_split == {"test~train": 1} and result.split_sources == {"source": 3}
    result, rows = convert(tmp_path, tmp_path / "dd", drop_cross_split_duplicates=True)
    assert (result.rows, result.splits, result.cross_split_dropped) == (2, {"train": 2}, 1)


def test_image_folder_with_a_labels_file(tmp_path):
    folder = tmp_path / "pets"
    folder.mkdir()
    for name, color in (("cat.png", RED), ("dog.png", BLUE)):
        (folder / name).write_bytes(png(color))
    (folder / "metadata.csv").write_text("file_name,label\ncat.png,cat\ndog.png,dog\n")
    with pytest.raises(BadRow, match=r"metadata.csv: line 2, column 'prompt': missing or empty .*--question gives"):
        run(Config(out=tmp_path / "x.parquet", input=folder))
    result, rows = convert(tmp_path, folder, question="What animal is this?", instruction="answer")
    assert (result.container, result.rows) == ("imagefolder", 2)
    assert rows[0]["prompt"] == "What animal is this? Give only the final answer inside <answer> </answer> tags."
    assert [r["answer"] for r in rows] == ["cat", "dog"] and rows[1]["images"][0]["path"] == "dog.png"


# ---------------------------------------------------------------- layouts

def test_llava_conversations(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "1.jpg").write_bytes(jpeg(Image.new("RGB", (32, 24), RED)))
    items = [
        {"id": "000000033471", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the bus?"}, {"from": "gpt", "value": "Red"},
            {"from": "human", "value": "Is it moving?"}, {"from": "gpt", "value": "No"}]},
        {"id": "r1", "image": "coco/1.jpg", "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>How many buses?"},
            {"from": "gpt", "value": "<think>One bus.</think><answer>1</answer>"}]},
    ]
    src = tmp_path / "llava.json"
    src.write_text(json.dumps(items))
    result, rows = convert(tmp_path, src, instruction="none")
    assert result.layout == "llava"
    assert rows[0]["prompt"] == "What color is the bus?" and rows[0]["answer"] == "Red"
    assert meta(rows[0])["turns"] == 4 and rows[0]["images"][0]["path"] == "coco/1.jpg"
    assert result.dropped_exchanges == (1, 1)  # "Is it moving?" is left out, and counted
    assert ("later questions dropped", "1 in 1 multi-exchange rows (the first is kept)") in prepare_data.describe(result)
    assert (rows[1]["system"], rows[1]["answer"], rows[1]["reasoning"]) == ("Be brief.", "1", "One bus.")
    assert rows[1]["response"] == "<think>One bus.</think><answer>1</answer>" and rows[1]["answer_type"] == "number"


def test_mathvista_hub_parquet(tmp_path):
    image = {"bytes": png(GREEN, (40, 30)), "path": "images/1.jpg"}
    table = pa.table({
        "pid": ["1", "2"],
        "question": ["What is the value of x?", "What is the length of the rod?"],
        "image": ["images/1.jpg", "images/2.jpg"],
        "decoded_image": [image, image],
        "choices": [["30°", "45°", "60°"], None],
        "unit": [None, "cm"],
        "precision": [None, 1.0],
        "answer": ["45°", "2.50"],
        "question_type": ["multi_choice", "free_form"],
        "answer_type": ["text", "float"],
        "metadata": [{"category": "math-targeted-vqa", "task": "geometry problem solving", "skills": ["algebra"]},
                     {"category": "general-vqa", "task": "figure question answering", "skills": ["arithmetic"]}],
        "query": ["Hint: ...", "Hint: ..."],
    })
    src = tmp_path / "testmini-00000-of-00001.parquet"
    pq.write_table(table, src)
    result, rows = convert(tmp_path, src, instruction="none")
    assert result.layout == "mathvista" and [r["id"] for r in rows] == ["1", "2"]
    a, b = rows
    assert (a["answer"], a["answer_type"], a["choices"]) == ("B", "choice", ["30°", "45°", "60°"])
    assert a["prompt"] == "What is the value of x?\nA. 30°\nB. 45°\nC. 60°"
    assert meta(a)["raw_answer"] == "45°" and meta(a)["task"] == "geometry problem solving"
    assert (b["answer"], b["answer_type"]) == ("2.5", "number")
    assert b["prompt"] == ("What is the length of the rod?\nAnswer with a number with 1 decimal place. "
                           "The unit is cm.")
    assert meta(b)["precision"] == 1.0 and meta(b)["source_answer_type"] == "float" and "query" not in meta(b)
    assert image_of(a).size == (40, 30)


def test_mathvista_github_json_maps_pids_to_records(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "7.png").write_bytes(png(RED))
    src = tmp_path / "testmini.json"
    src.write_text(json.dumps({"7": {"pid": "7", "question": "How many bars?", "image": "images/7.png",
                                     "choices": None, "unit": None, "precision": None, "answer": "4",
                                     "question_type": "free_form", "answer_type": "integer",
                                     "metadata": {"task": "figure question answering"}}}))
    result, rows = convert(tmp_path, src, instruction="none")
    assert (result.layout, rows[0]["id"], rows[0]["answer"]) == ("mathvista", "7", "4")
    assert rows[0]["prompt"] == "How many bars?\nAnswer with an integer." and "id" not in meta(rows[0])


def test_geometry3k_intergps_folder_and_hub_layout(tmp_path):
    root = tmp_path / "geometry3k"
    for split, pid, answer in (("train", 1, "B"), ("test", 2401, "D")):
        folder = root / split / str(pid)
        folder.mkdir(parents=True)
        (folder / "img_diagram.png").write_bytes(png(RED, (50, 40)))
        (folder / "data.json").write_text(json.dumps({
            "id": pid, "problem_text": "Find x.", "choices": ["3", "6", "9", "12"], "answer": answer,
            "problem_type_graph": ["Triangle"], "problem_type_goal": ["Length"], "annotat_text": "...",
            "compact_text": "Find x.", "compact_choices": ["3", "6", "9", "12"]}))
    result, rows = convert(tmp_path, root, instruction="none")
    assert (result.container, result.layout) == ("intergps", "geometry3k")
    by_id = {r["id"]: r for r in rows}
    assert by_id["1"]["answer"] == "B" and by_id["2401"]["answer"] == "D" and by_id["1"]["answer_type"] == "choice"
    assert meta(by_id["2401"])["problem_type_goal"] == ["Length"] and meta(by_id["2401"])["source_split"] == "test"
    assert by_id["1"]["images"][0]["path"] == "train/1/img_diagram.png"
    assert by_id["1"]["prompt"] == "Find x.\nA. 3\nB. 6\nC. 9\nD. 12"

    hub = pa.table({"images": [[{"bytes": png(BLUE), "path": None}]], "problem": ["<image>Find y."],
                    "answer": ["6"], "id": [7], "choices": [["3", "6", "9", "12"]], "ground_truth": ["B"]})
    pq.write_table(hub, tmp_path / "train-00000.parquet")
    result, rows = convert(tmp_path, tmp_path / "train-00000.parquet", instruction="none")
    assert result.layout == "geometry3k"
    assert rows[0]["prompt"].startswith("Find y.\nA. 3") and rows[0]["answer"] == "B"
    assert meta(rows[0])["answer_value"] == "6"
    # the older Hub revision (images, problem, answer only) is read by the plain layout
    pq.write_table(hub.select(["images", "problem", "answer"]), tmp_path / "old.parquet")
    result, rows = convert(tmp_path, tmp_path / "old.parquet", instruction="none")
    assert result.layout == "rows" and rows[0]["prompt"] == "Find y." and rows[0]["answer_type"] == "number"


def test_clevr_questions_json_with_the_published_tree(tmp_path):
    root = tmp_path / "CLEVR_v1.0"
    (root / "images" / "val").mkdir(parents=True)
    (root / "questions").mkdir()
    for i, color in enumerate((RED, BLUE)):
        (root / "images" / "val" / f"CLEVR_val_{i:06d}.png").write_bytes(png(color, (48, 32)))
    questions = [
        {"image_index": 0, "split": "val", "image_filename": "CLEVR_val_000000.png",
         "question": "How many cubes are there?", "answer": "3", "question_family_index": 40, "question_index": 0,
         "program": [{"type": "scene", "inputs": [], "function": "scene", "value_inputs": []}]},
        {"image_index": 1, "split": "val", "image_filename": "CLEVR_val_000001.png",
         "question": "Is there a red sphere?", "answer": "no", "question_family_index": 3, "question_index": 1},
    ]
    src = root / "questions" / "CLEVR_val_questions.json"
    src.write_text(json.dumps({"info": {"split": "val", "version": "1.0"}, "questions": questions}))
    result, rows = convert(tmp_path, src, instruction="none")
    assert (result.container, result.layout) == ("json", "clevr")
    assert [r["id"] for r in rows] == ["clevr-val-0", "clevr-val-1"]
    assert [(r["answer"], r["answer_type"]) for r in rows] == [("3", "number"), ("no", "text")]
    assert "program" not in meta(rows[0]) and meta(rows[0])["question_family_index"] == 40
    assert image_of(rows[1]).getpixel((1, 1)) == BLUE


def test_refcoco_boxes_are_converted_to_pixel_xyxy_of_the_stored_image(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "c1.jpg").write_bytes(jpeg(Image.new("RGB", (200, 100), RED)))
    vlm_r1 = [
        {"image": "train2014/c1.jpg", "problem": "Locate: bowl", "normal_caption": "bowl behind the others",
         "solution": [40.1, 12.0, 110.7, 50.3]},
        {"image": "train2014/c1.jpg", "problem": "Locate: cup", "normal_caption": "the cup",
         "solution": [0.1, 0.2, 0.5, 0.6]},  # every value <= 1: normalised
    ]
    src = tmp_path / "refcoco_train.json"
    src.write_text(json.dumps(vlm_r1))
    result, rows = convert(tmp_path, src, instruction="none")
    assert result.layout == "refcoco"
    assert rows[0]["prompt"].endswith("of the region this sentence describes: bowl behind the others")
    assert (rows[0]["answer"], rows[0]["answer_type"]) == ("[40.1, 12, 110.7, 50.3]", "box")
    assert rows[1]["answer"] == "[20, 20, 100, 60]"
    assert meta(rows[1])["box_conversion"]["from"] == "xyxy, normalized"
    assert meta(rows[0])["raw_answer"] == "[40.1, 12.0, 110.7, 50.3]"

    # lmms-lab/RefCOCO: COCO xywh pixels, several expressions; images shrunk to a quarter of their pixels
    lmms = pa.table({"question_id": ["r0"], "image": [{"bytes": jpeg(Image.new("RGB", (200, 100), BLUE)),
                                                        "path": None}],
                     "question": ["Please carefully observe the area circled in the image."],
                     "answer": [["man on left", "guy in red"]], "segmentation": [[1.0, 2.0, 3.0]],
                     "bbox": [[20.0, 10.0, 60.0, 40.0]], "iscrowd": [0], "file_name": ["COCO_val2014_1.jpg"]})
    pq.write_table(lmms, tmp_path / "val-00000.parquet")
    result, rows = convert(tmp_path, tmp_path / "val-00000.parquet", max_pixels=5000, instruction="none")
    row = rows[0]
    assert result.layout == "refcoco" and image_of(row).size == (100, 50)
    assert row["answer"] == "[10, 5, 40, 25]" and row["id"] == "r0"
    assert meta(row)["box_conversion"] == {"from": "xywh, pixel", "to": "xyxy, pixels of the stored image",
                                           "original_size": [200, 100], "image_size": [100, 50]}
    assert meta(row)["expressions"] == ["man on left", "guy in red"] and "segmentation" not in meta(row)
    # --box-format overrides the layout's convention
    result, rows = convert(tmp_path, tmp_path / "val-00000.parquet", box_format="xyxy", instruction="none")
    assert rows[0]["answer"] == "[20, 10, 60, 40]"


def test_plain_rows_box_answers_follow_a_resize(tmp_path):
    (tmp_path / "a.png").write_bytes(png(RED, (80, 40)))
    src = tmp_path / "boxes.jsonl"
    src.write_text(json.dumps({"prompt": "Where is it?", "image": "a.png", "answer": "[8, 4, 40, 20]"}) + "\n"
                   + json.dumps({"prompt": "And this?", "image": "a.png", "answer": [0.5, 0.5, 0.25, 0.25],
                                 "answer_type": "box"}) + "\n")
    _, rows = convert(tmp_path, src, max_pixels=800, box_format="xywh")
    assert image_of(rows[0]).size == (40, 20) and [r["answer_type"] for r in rows] == ["box", "box"]
    assert rows[0]["answer"] == "[4, 2, 24, 12]" and rows[1]["answer"] == "[20, 10, 30, 15]"
    two = tmp_path / "two.jsonl"
    two.write_text(json.dumps({"prompt": "?", "images": ["a.png", "a.png"], "answer": "[1, 2, 3, 4]"}) + "\n")
    with pytest.raises(BadRow, match="column 'images': a box answer needs exactly one image, found 2"):
        run(Config(out=tmp_path / "x.parquet", input=two))


def test_auto_detection_refuses_an_ambiguous_record_and_format_decides(tmp_path):
    src = tmp_path / "both.jsonl"
    (tmp_path / "a.png").write_bytes(png())
    src.write_text(json.dumps({"conversations": [{"from": "human", "value": "Find it"}, {"from": "gpt", "value": "x"}],
                               "bbox": [1, 2, 3, 4], "caption": "a red thing", "image": "a.png"}) + "\n")
    with pytest.raises(ValueError, match="fits several layouts \\(llava, refcoco\\); choose one with --format"):
        run(Config(out=tmp_path / "x.parquet", input=src))
    result, rows = convert(tmp_path, src, format="llava")
    assert result.layout == "llava" and rows[0]["answer"] == "x"


def test_map_renames_columns_before_the_layout_reads_them(tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text(json.dumps({"query": "2+3?", "target": 5, "difficulty": "easy"}) + "\n")
    result, rows = convert(tmp_path, src, map=("query=prompt", "target=answer"), instruction="none")
    assert rows[0]["prompt"] == "2+3?" and rows[0]["answer"] == "5" and meta(rows[0]) == {"difficulty": "easy"}


# ---------------------------------------------------------------- prompts and answers

@pytest.mark.parametrize("given, answer_type, stored", [
    ("1,000.50", "number", "1000.5"), ("007", "number", "7"), ("3/4", "number", "3/4"), ("(b)", "choice", "B"),
    ("$x^2 + 1$", "math", "x^2 + 1"), ("\\boxed{\\frac{1}{2}}", "math", "\\frac{1}{2}"),
    ("  New   York ", "text", "New York"),
])
def test_answers_are_normalised_and_the_raw_one_kept(tmp_path, given, answer_type, stored):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"prompt": "q?", "answer": given, "answer_type": answer_type,
                               "choices": ["x", "y"] if answer_type == "choice" else None}) + "\n")
    _, rows = convert(tmp_path, src)
    assert rows[0]["answer"] == stored
    assert meta(rows[0]).get("raw_answer") == (given if given != stored else None)


def test_answer_that_does_not_fit_its_type_is_a_bad_row(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"prompt": "q?", "answer": "many", "answer_type": "number"}) + "\n"
                   + json.dumps({"prompt": "q?", "answer": "D", "choices": ["x", "y"]}) + "\n")
    with pytest.raises(BadRow, match=r"a.jsonl: line 1, column 'answer': 'many' is not a number"):
        run(Config(out=tmp_path / "x.parquet", input=src))
    out = tmp_path / "y.parquet"
    with pytest.raises(ValueError, match=r"no rows to write; all 2 rows were rejected, the first: .*line 1"):
        run(Config(out=out, input=src, skip_bad=True))
    assert not out.exists() and not out.with_suffix(".rejects.parquet").exists()


def test_instruction_templates_system_and_choices(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"prompt": "Which is larger?", "choices": ["7", "9"], "answer": "9"}) + "\n"
                   + json.dumps({"prompt": "Listed: (A) cat (B) dog", "choices": ["cat", "dog"], "answer": "dog",
                                 "system": "own"}) + "\n")
    _, rows = convert(tmp_path, src, instruction="Question: {question}\nAnswer inside <answer></answer>.",
                      system="think")
    assert rows[0]["prompt"] == "Question: Which is larger?\nA. 7\nB. 9\nAnswer inside <answer></answer>."
    assert rows[0]["system"].startswith("You are a careful assistant") and rows[1]["system"] == "own"
    # options already listed: not repeated
    assert rows[1]["prompt"] == "Question: Listed: (A) cat (B) dog\nAnswer inside <answer></answer>."
    _, rows = convert(tmp_path, src, instruction="boxed")
    assert rows[0]["prompt"].endswith("B. 9\nThink step by step, then put the final answer in \\boxed{}.")
    _, rows = convert(tmp_path, src)  # default: the think/answer instruction
    assert rows[0]["prompt"].endswith("inside <answer> </answer> tags.") and rows[0]["system"] is None


# ---------------------------------------------------------------- bad input

GOOD = '{"prompt": "ok?", "answer": "1"}'
BAD_CASES = [
    ("in.jsonl", GOOD + '\n{"prompt": "b", "answer": \n', r"in.jsonl: line 2, column \d+: malformed JSON", None),
    ("in.jsonl", GOOD + '\n{"prompt": "a", "answer": "1", "image": "missing.png"}\n',
     r"in.jsonl: line 2, column 'images': image file .*missing.png not found", "images"),
    ("in.jsonl", GOOD + '\n{"prompt": "a", "answer": "1", "image": "broken.png"}\n',
     r"in.jsonl: line 2, column 'images': unreadable image", "images"),
    ("in.jsonl", GOOD + '\n{"prompt": "a", "answer": "  "}\n', r"in.jsonl: line 2, column 'answer': missing or empty",
     "answer"),
    ("in.jsonl", GOOD + '\n{"answer": "1"}\n', r"in.jsonl: line 2, column 'prompt': missing or empty", "prompt"),
    ("in.jsonl", GOOD + '\n[1, 2]\n', r"in.jsonl: line 2: expected a JSON object", None),
    ("in.csv", 'prompt,answer\nok?,1\nb,\n', r"in.csv: line 3, column 'answer': missing or empty", "answer"),
    ("in.csv", 'prompt,answer\nok?,1\nb,2,3\n', r"in.csv: line 3: 3 cells for 2 columns", None),
    ("in.json", f'[{GOOD},\n 7]', r"in.json: item 1 \(line 2\): expected a JSON object", None),
]


@pytest.mark.parametrize("name, content, message, column", BAD_CASES)
def test_bad_input_stops_naming_file_line_column_and_writes_nothing(tmp_path, name, content, message, column):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / "out" / "d.parquet"
    with pytest.raises(BadRow, match=message):
        run(Config(out=out, input=src))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize("name, content, message, column", BAD_CASES)
def test_skip_bad_writes_good_rows_and_a_rejects_table(tmp_path, name, content, message, column):
    import datasets

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / "out" / "d.parquet"
    result = run(Config(out=out, input=src, skip_bad=True))
    assert result.rows == 1 and result.rejected == 1
    assert result.rejects_path == tmp_path / "out" / "d.rejects.parquet"
    assert [r["prompt"].split()[0] for r in rows_of(out)] == ["ok?"]
    rejects = read_table(result.rejects_path, "rejects")
    assert rejects.manifest["stage"] == "prepare-data"
    (reject,) = rejects.table.to_pylist()
    assert reject["source"] == str(src) and reject["column"] == column and reject["raw"]
    assert re.search(message, f"{reject['source']}: {reject['location']}"
                              + (f", column {reject['column']!r}" if reject["column"] else "") + f": {reject['reason']}")
    ds = datasets.load_dataset("parquet", data_files=str(result.rejects_path), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds[0]["reason"] == reject["reason"]


def test_a_json_syntax_error_stops_even_with_skip_bad(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(f'[{GOOD},\n {{"prompt": "b" "answer": "2"}}]')
    out = tmp_path / "d.parquet"
    with pytest.raises(ValueError, match=r"in.json: line 2, column 17: malformed JSON \(Expecting ',' delimiter\)"):
        run(Config(out=out, input=src, skip_bad=True))
    assert not out.exists() and not out.with_suffix(".rejects.parquet").exists()


def test_no_rejects_means_no_rejects_file_and_a_stale_one_goes(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD + "\n")
    out = tmp_path / "d.parquet"
    stale = tmp_path / "d.rejects.parquet"
    stale.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="d.rejects.parquet: output already exists"):
        run(Config(out=out, input=src, skip_bad=True))
    assert not out.exists()
    result = run(Config(out=out, input=src, skip_bad=True, overwrite=True))
    assert result.rejected == 0 and result.rejects_path is None and not stale.exists() and out.exists()
    assert ("rejected", "0 (no rejects file written)") in prepare_data.describe(result)


def test_cli_skip_bad_summary_counts_rejects(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([GOOD, '{"prompt": "x"}', '{"answer": "2"}', '{"prompt": "y", "answer": "3"}']) + "\n")
    out = tmp_path / "d.parquet"
    runner = CliRunner()
    result = runner.invoke(app, ["prepare-data", "--input", str(src), "--out", str(out)])
    assert result.exit_code == 2 and "in.jsonl: line 2, column 'answer': missing or empty" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["prepare-data", "--input", str(src), "--out", str(out), "--skip-bad"])
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│┃┌┐└┘├┤─┬┴┼]", " ", result.output).split())
    assert "rows 2" in text and "rejected 2" in text and "rejects file" in text
    assert read_table(tmp_path / "d.rejects.parquet", "rejects").table.column("column").to_pylist() == ["answer", "prompt"]


# ---------------------------------------------------------------- images

def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), RED)
    img.paste(Image.new("RGB", (20, 20), BLUE), (20, 0))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    (tmp_path / "photo.jpg").write_bytes(jpeg(img, exif=exif.tobytes()))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "q?", "answer": "a", "image": "photo.jpg"}) + "\n")
    _, rows = convert(tmp_path, src)
    stored = image_of(rows[0])
    assert stored.format == "JPEG" and stored.size == (20, 40)
    top, bottom = stored.convert("RGB").getpixel((10, 5)), stored.convert("RGB").getpixel((10, 35))
    assert top[0] > 180 and top[2] < 80 and bottom[2] > 180 and bottom[0] < 80  # red on top, blue below
    assert 0x0112 not in stored.getexif()


def test_resize_limits_keep_the_aspect_ratio():
    assert target_size(400, 100, 10_000, None) == (200, 50)
    assert target_size(10, 20, None, 800) == (20, 40)
    assert target_size(64, 64, 10_000, 100) == (64, 64)
    for w, h, cap in [(1001, 337, 50_000), (333, 777, 12_345), (4000, 3000, 1_003_520)]:
        tw, th = target_size(w, h, cap, None)
        assert cap * 0.98 < tw * th <= cap and abs(tw / th - w / h) / (w / h) <= 1 / min(tw, th)
    assert target_size(5000, 3, 1000, None) == (1000, 1)  # extreme strips still fit under the cap
    proc = ImageProcessor(max_pixels=10_000, min_pixels=2_500)
    assert proc.process(png(RED, (400, 100))).size == (200, 50)
    small = proc.process(png(RED, (10, 20)))
    assert small.size == (36, 71) and small.original_size == (10, 20)  # 2,556 >= 2,500 pixels
    same = png(GREEN, (60, 60))
    assert proc.process(same).bytes == same  # nothing to do: the bytes are kept


def test_images_become_rgb_and_transparency_lies_on_white():
    proc = ImageProcessor()
    rgba = proc.process(png((255, 0, 0, 0), (8, 8), mode="RGBA"))
    out = Image.open(io.BytesIO(rgba.bytes))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    grey = Image.open(io.BytesIO(proc.process(png(128, (8, 8), mode="L")).bytes))
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (128, 128, 128)


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_bomb_png(50_000, 50_000))  # 2.5 G pixels in 100 bytes
    (tmp_path / "big.png").write_bytes(png(RED, (100, 100)))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "q", "answer": "a", "image": "bomb.png"}) + "\n")
    with pytest.raises(BadRow, match=r"line 1, column 'images': image is 50000x50000 = 2,500,000,000 pixels, over "
                                     r"the 89,478,485-pixel decompression-bomb limit"):
        run(Config(out=tmp_path / "d.parquet", input=src))
    src.write_text(json.dumps({"prompt": "q", "answer": "a", "image": "big.png"}) + "\n")
    with pytest.raises(BadRow, match="image is 100x100 = 10,000 pixels, over the 5,000-pixel"):
        run(Config(out=tmp_path / "d.parquet", input=src, max_image_pixels=5_000))
    assert run(Config(out=tmp_path / "d.parquet", input=src)).rows == 1


def test_video_frames_are_sampled_from_an_animated_image(tmp_path):
    colors = [(i * 25, 0, 255 - i * 25) for i in range(10)]
    frames = [Image.new("RGB", (16, 16), c) for c in colors]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=40)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "What changes?", "answer": "color", "video": "clip.gif"}) + "\n")
    _, rows = convert(tmp_path, src, video_frames=4)
    assert len(rows[0]["images"]) == 4 and meta(rows[0])["video"] == {"path": "clip.gif", "frames": [1, 3, 6, 8],
                                                                       "total_frames": 10}
    red = [image_of(rows[0], i).getpixel((8, 8))[0] for i in range(4)]
    assert red == sorted(red) and abs(red[0] - 25) <= 12 and abs(red[3] - 200) <= 12


@pytest.mark.skipif(video_decoder() is not None, reason="a video decoder is installed here")
def test_video_without_a_decoder_is_a_clear_one_line_error(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "What happens?", "answer": "x", "video": "clip.mp4"}) + "\n")
    with pytest.raises(BadRow, match=r"line 1, column 'video': cannot decode .mp4 video: install PyAV \(pip install av\) "
                                     r"or OpenCV"):
        run(Config(out=tmp_path / "d.parquet", input=src))


def test_a_missing_relative_image_names_image_root(tmp_path):
    src = tmp_path / "refs.jsonl"
    src.write_text(json.dumps({"prompt": "Where?", "image": "train2014/x.jpg", "answer": "1"}) + "\n"
                   + json.dumps({"prompt": "Where?", "image": str(tmp_path / "abs.jpg"), "answer": "1"}) + "\n"
                   + json.dumps({"prompt": "Why?", "answer": "1"}) + "\n")
    with pytest.raises(BadRow, match=rf"image file {tmp_path}/train2014/x.jpg not found \(relative paths start "
                                     rf"from {tmp_path}; --image-root names the image folder\)"):
        run(Config(out=tmp_path / "d.parquet", input=src))
    result = run(Config(out=tmp_path / "d.parquet", input=src, skip_bad=True, allow_outside_paths=True))
    reasons = [r["reason"] for r in read_table(result.rejects_path, "rejects").table.to_pylist()]
    assert "--image-root" in reasons[0] and reasons[1] == f"image file {tmp_path / 'abs.jpg'} not found"


# ---------------------------------------------------------------- dedupe, splits, order

def test_dedupe_by_content_and_duplicate_ids(tmp_path):
    (tmp_path / "a.png").write_bytes(png(RED))
    (tmp_path / "copy.png").write_bytes(png(RED))  # same pixels, another file
    (tmp_path / "b.png").write_bytes(png(BLUE))
    lines = [
        {"id": "1", "prompt": "Color?", "image": "a.png", "answer": "red"},
        {"id": "2", "prompt": "Color?", "image": "copy.png", "answer": "red"},  # same content: dropped
        {"id": "3", "prompt": "Color?", "image": "b.png", "answer": "blue"},  # another image: kept
        {"id": "4", "prompt": "Color?", "image": "a.png", "answer": "crimson"},  # another answer: kept
        {"id": "1", "prompt": "Color?", "image": "a.png", "answer": "red"},  # an exact repeat: dropped
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result, rows = convert(tmp_path, src)
    assert [r["id"] for r in rows] == ["1", "3", "4"] and result.duplicates == 2
    with pytest.raises(BadRow, match=r"in.jsonl: line 5, column 'id': duplicate id '1'"):
        run(Config(out=tmp_path / "k.parquet", input=src, dedupe=False))
    src.write_text("\n".join(json.dumps(x) for x in lines[:4]) + "\n")
    result, rows = convert(tmp_path, src, dedupe=False)
    assert result.rows == 4 and result.duplicates == 0
    lines[3]["id"] = "1"
    src.write_text("\n".join(json.dumps(x) for x in lines[:4]) + "\n")
    with pytest.raises(BadRow, match="duplicate id '1'"):
        run(Config(out=tmp_path / "k.parquet", input=src))


def _numbered(tmp_path: Path, name: str, ids: list[int]) -> Path:
    src = tmp_path / name
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "prompt": f"{i} + 1?", "answer": i + 1}) for i in ids) + "\n")
    return src


def test_split_depends_on_the_id_only(tmp_path):
    ids = list(range(200))
    forward = _numbered(tmp_path, "f.jsonl", ids)
    backward = _numbered(tmp_path, "b.jsonl", ids[::-1])
    _, a = convert(tmp_path, forward, test_fraction=0.2, val_fraction=0.1)
    _, b = convert(tmp_path, backward, test_fraction=0.2, val_fraction=0.1)
    _, c = convert(tmp_path, forward, test_fraction=0.2, val_fraction=0.1, shuffle=True, seed=5)
    split_a, split_b, split_c = ({r["id"]: r["split"] for r in rows} for rows in (a, b, c))
    assert split_a == split_b == split_c == {f"q{i}": assign_split(f"q{i}", 0.2, 0.1) for i in ids}
    assert set(split_a.values()) == {"train", "val", "test"}


def test_shuffle_is_seeded_streaming_and_keeps_ids(tmp_path):
    src = _numbered(tmp_path, "n.jsonl", list(range(50)))
    order = lambda rows: [r["id"] for r in rows]  # noqa: E731
    _, plain = convert(tmp_path, src)
    _, full1 = convert(tmp_path, src, shuffle=True, seed=1)
    _, full1b = convert(tmp_path, src, shuffle=True, seed=1)
    _, full2 = convert(tmp_path, src, shuffle=True, seed=2)
    _, small = convert(tmp_path, src, shuffle=True, seed=1, shuffle_buffer=5)
    assert order(full1) == order(full1b) != order(full2) and order(full1) != order(plain)
    assert sorted(order(full1)) == sorted(order(plain)) == sorted(order(small))
    # a buffer of 5 moves a row at most a little way back: the first 5 out all come from the first 10 in
    assert {int(i[1:]) for i in order(small)[:5]} <= set(range(10)) and order(small) != order(plain)
    _, limited = convert(tmp_path, src, limit=3)
    assert order(limited) == ["q0", "q1", "q2"]


def test_json_is_streamed_in_chunks_with_correct_lines(tmp_path):
    items = [{"question": f"q{i}", "answer": 10 ** 12 + i, "note": "x" * (i * 3)} for i in range(30)]
    src = tmp_path / "big.json"
    src.write_text(json.dumps({"info": {"n": 30}, "questions": items}, indent=1))
    stream = JsonItems(src)
    stream.chunk = 7  # tiny reads: items, strings and numbers straddle every boundary
    assert stream.start() == "questions" and stream.header == {"info": {"n": 30}}
    records = list(stream.records())
    assert [r.data for r in records] == items
    lines = src.read_text().splitlines()
    for rec in records:
        line = int(rec.where.location.split("line ")[1].rstrip(")"))
        assert lines[line - 1].strip() == "{"
        assert f'"q{rec.index}"' in lines[line]


# ---------------------------------------------------------------- synthetic tasks

def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for row in read_table(path, "dataset").table.to_pylist():
        images = row.pop("images")
        h.update(json.dumps(row, sort_keys=True).encode())
        for img in images:
            h.update(img["bytes"])
    return h.hexdigest()


def test_counting_output_is_unchanged_for_its_default_knobs(tmp_path):
    out = tmp_path / "c.parquet"
    run(Config(out=out, task="counting", num=48, test_fraction=0.25))
    assert _digest(out) == "143f491c5748145e67625c0070c3471899a87b0ada82493b637c6d79209b3e35"  # the pre-issue-3 output


def test_comparison_answers_match_the_drawn_squares(tmp_path):
    out = tmp_path / "c.parquet"
    run(Config(out=out, task="comparison", num=40, task_options=("max_count=5", "min_gap=2")))
    for row in rows_of(out):
        m = meta(row)
        assert abs(m["red"] - m["blue"]) >= 2 and row["answer"] == ("A" if m["red"] > m["blue"] else "B")
        pixels = list(image_of(row).getdata())
        assert pixels.count((220, 30, 30)) == 100 * m["red"] and pixels.count((30, 60, 220)) == 100 * m["blue"]
        assert row["prompt"].startswith("Are there more red squares or more blue squares in the image?\nA. red\nB. blue")
    with pytest.raises(ValueError, match="min_gap must be between 1 and max_count"):
        run(Config(out=tmp_path / "x.parquet", task="comparison", num=1, task_options=("min_gap=9",)))


def test_arithmetic_answers_are_the_value_of_the_drawn_expression(tmp_path):
    out = tmp_path / "a.parquet"
    run(Config(out=out, task="arithmetic", num=40, task_options=("max_value=20", "operands=3", "ops=+-*",
                                                                     "image_size=168")))
    again = tmp_path / "b.parquet"
    run(Config(out=again, task="arithmetic", num=40, task_options=("max_value=20", "operands=3", "ops=+-*",
                                                                   "image_size=168")))
    assert _digest(out) == _digest(again)
    rows = rows_of(out)
    for row in rows:
        expression = meta(row)["expression"]
        assert set(expression) <= set("0123456789+-* ")
        assert int(row["answer"]) == eval(expression) >= 0  # digits and + - * only
        assert image_of(row).getextrema()[0] == (0, 255)  # something dark was drawn
    assert any("*" in meta(r)["expression"] for r in rows)
    with pytest.raises(ValueError, match="does not fit"):
        run(Config(out=tmp_path / "x.parquet", task="arithmetic", num=1, task_options=("max_value=99999",
                                                                                      "image_size=56")))


def test_grounding_answers_box_the_named_shape(tmp_path):
    from rftcli.rewards.accuracy import accuracy
    from rftcli.tasks.grounding import COLORS

    out = tmp_path / "g.parquet"
    run(Config(out=out, task="grounding", num=30, task_options=("distractors=4",)))
    rows = rows_of(out)
    for row in rows:
        x1, y1, x2, y2 = json.loads(row["answer"])
        color = COLORS[meta(row)["target"].split()[0]]
        img = image_of(row)
        inside = sum(img.getpixel((x, y)) == color for x in range(x1, x2) for y in range(y1, y2))
        assert inside >= 0.45 * (x2 - x1) * (y2 - y1)  # a triangle fills half its box, a circle ~0.79
        assert row["prompt"].split(": ", 1)[1].startswith("the " + meta(row)["target"])
    completions = [f"<think>.</think><answer>{r['answer']}</answer>" for r in rows]
    assert accuracy(completions, answer=[r["answer"] for r in rows], answer_type=["box"] * len(rows)) == [1.0] * 30
