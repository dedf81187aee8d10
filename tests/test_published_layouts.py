"""prepare-data on the popular RFT / VQA data sets, each written here in the layout its publisher uses
(field names, types and answer encodings as on the Hub or the project's site), so the conversion is
checked against the public schema rather than our own fixtures. Sources:

    ScienceQA      derek-thomas/ScienceQA and lmms-lab/ScienceQA cards (answer: int8 index into choices);
                   lmms-eval tasks/scienceqa/utils.py (prompt "Context: <hint>", target = options[answer])
    A-OKVQA        allenai/aokvqa README (choices[correct_choice_idx]); the HuggingFaceM4/A-OKVQA rows
                   keep direct_answers as the text of a Python list
    ChartQA        HuggingFaceM4/ChartQA card (image, query, label: list of string, human_or_machine
                   class label); lmms-lab/ChartQA (type, question, answer, image), lmms-eval chartqa.yaml
    MathVision     MathLLMs/MathVision eval.yaml and lmms-eval tasks/mathvision/utils.py (question,
                   options, image path + decoded_image, answer letter or value, level, subject)
    MathVerse      AI4Math/MathVerse testmini features (sample_index, problem_version, question with
                   options inline, image, answer, question_type, metadata struct, query_wo, query_cot)
    LLaMA-Factory  hiyouga/LLaMA-Factory data/mllm_demo.json (messages role/content, images)
    TRL            HuggingFaceH4/llava-instruct-mix-vsft card (messages with content parts
                   {index, text, type}, images: sequence of image); TRL prompt-only conversational rows
    R1 sets        R1-V (leonardPKU/clevr_cogen_a_train: image, problem, solution "<answer> 3 </answer>"),
                   lmms-lab/multimodal-open-r1-8k-verified (image, problem, solution, original_*),
                   TIGER-Lab/ViRL39K README (answers all in \\boxed{}), FanqingM/MMK12 (id, subject,
                   image, question with options inline, answer letter or value)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rftcli.schema import read_table
from rftcli.stages.prepare_data import BadRow, Config, run

RED, BLUE, GREEN = (220, 20, 20), (20, 40, 220), (20, 180, 40)


def png(color=RED, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def hf_image(color=RED, path: str | None = None) -> dict:
    """A `datasets` Image feature as Parquet stores it."""
    return {"bytes": png(color), "path": path}


def meta(row: dict) -> dict:
    return json.loads(row["metadata"]) if row["metadata"] else {}


def pixel(row: dict, i: int = 0) -> tuple:
    return Image.open(io.BytesIO(row["images"][i]["bytes"])).getpixel((2, 2))


def convert(tmp_path: Path, src: Path, **kw):
    out = tmp_path / "out" / "d.parquet"
    result = run(Config(out=out, input=src, overwrite=True, instruction="none", dedupe=False, **kw))
    return result, read_table(out, "dataset").table.to_pylist()


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# ---------------------------------------------------------------- multiple choice with an answer index

SCIENCEQA_SCHEMA = pa.schema([
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("question", pa.string()),
    ("choices", pa.list_(pa.string())), ("answer", pa.int8()), ("hint", pa.string()), ("task", pa.string()),
    ("grade", pa.string()), ("subject", pa.string()), ("topic", pa.string()), ("category", pa.string()),
    ("skill", pa.string()), ("lecture", pa.string()), ("solution", pa.string()),
])


def test_scienceqa_hub_parquet_answer_index_becomes_the_option_letter(tmp_path):
    common = {"task": "closed choice", "grade": "grade4", "subject": "language science", "topic": "verbs",
              "category": "Verb tense", "skill": "Is the sentence in the past, present, or future tense?",
              "lecture": "Present tense verbs tell you about something that is happening now.",
              "solution": "The sentence is in future tense."}
    rows = [
        {**common, "image": hf_image(RED, "image.png"), "question": "Which of these states is farthest north?",
         "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0, "hint": ""},
        {**common, "image": None, "question": "Which tense does the sentence use?",
         "choices": ["present tense", "future tense", "past tense"], "answer": 1,
         "hint": "Mona will print her name with care."},
        # numeric options: the index must not be read as an option's text ("0" is option B here)
        {**common, "image": hf_image(BLUE), "question": "How many magnets are there?", "choices": ["1", "0"],
         "answer": 0, "hint": ""},
    ]
    src = write_parquet(tmp_path / "train-00000-of-00001.parquet", rows, SCIENCEQA_SCHEMA)
    result, out = convert(tmp_path, src)
    assert result.layout == "scienceqa"
    assert [r["answer"] for r in out] == ["A", "B", "A"]
    assert [r["answer_type"] for r in out] == ["choice"] * 3
    assert out[0]["prompt"] == ("Which of these states is farthest north?\n"
                                "A. West Virginia\nB. Louisiana\nC. Arizona\nD. Oklahoma")
    assert out[1]["prompt"] == ("Context: Mona will print her name with care.\nWhich tense does the sentence use?\n"
                                "A. present tense\nB. future tense\nC. past tense")
    assert out[1]["choices"] == ["present tense", "future tense", "past tense"]
    assert [len(r["images"]) for r in out] == [1, 0, 1] and pixel(out[2]) == BLUE
    m = meta(out[1])
    assert m["answer_index"] == 1 and m["lecture"] == common["lecture"] and m["solution"] == common["solution"]
    assert (m["subject"], m["topic"], m["grade"], m["skill"]) == (
        "language science", "verbs", "grade4", common["skill"])
    assert "hint" not in m and "raw_answer" not in m and out[0]["task"] == "scienceqa"


def test_scienceqa_github_problems_json_and_a_bad_index(tmp_path):
    # ScienceQA's own release: problems.json maps each id to a record; images/<split>/<id>/image.png
    folder = tmp_path / "images" / "test" / "4"
    folder.mkdir(parents=True)
    (folder / "image.png").write_bytes(png(GREEN))
    record = {"question": "Which animal's feet are also adapted for digging?", "choices": ["aardvark", "groundhog",
              "mole"], "answer": 2, "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade2",
              "subject": "natural science", "topic": "biology", "category": "Adaptations", "skill": "Animal adaptations",
              "lecture": "An adaptation is ...", "solution": "Look at the picture ...", "split": "test"}
    src = tmp_path / "problems.json"
    src.write_text(json.dumps({"4": record}))
    result, out = convert(tmp_path, src)
    assert (result.layout, out[0]["id"], out[0]["answer"]) == ("scienceqa", "4", "C")
    assert pixel(out[0]) == GREEN and meta(out[0])["source_split"] == "test"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**record, "image": None, "answer": 5}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'answer': answer index 5 is out of range for 3 choices"):
        run(Config(out=tmp_path / "x.parquet", input=bad))


AOKVQA_SCHEMA = pa.schema([
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("question_id", pa.string()),
    ("question", pa.string()), ("choices", pa.list_(pa.string())), ("correct_choice_idx", pa.int8()),
    ("direct_answers", pa.string()), ("difficult_direct_answer", pa.bool_()), ("rationales", pa.list_(pa.string())),
])


def test_aokvqa_hub_parquet_correct_choice_idx_and_direct_answers(tmp_path):
    direct = ["cigarette"] * 9 + ["smoke"]
    rows = [{"image": hf_image(RED), "question_id": "22jbM6gDxdaMaunuzgrsBB",
             "question": "What is in the motorcyclist's mouth?",
             "choices": ["toothpick", "food", "popsicle stick", "cigarette"], "correct_choice_idx": 3,
             "direct_answers": str(direct),  # HuggingFaceM4/A-OKVQA keeps the list as its Python text
             "difficult_direct_answer": False,
             "rationales": ["He's smoking while riding.", "The man is smoking."]}]
    src = write_parquet(tmp_path / "validation-00000-of-00001.parquet", rows, AOKVQA_SCHEMA)
    result, out = convert(tmp_path, src)
    row = out[0]
    assert result.layout == "aokvqa" and row["id"] == "22jbM6gDxdaMaunuzgrsBB" and row["task"] == "aokvqa"
    assert (row["answer"], row["answer_type"]) == ("D", "choice")
    assert row["prompt"] == ("What is in the motorcyclist's mouth?\n"
                             "A. toothpick\nB. food\nC. popsicle stick\nD. cigarette")
    m = meta(row)
    assert m["direct_answers"] == direct and m["rationales"] == rows[0]["rationales"]
    assert m["answer_index"] == 3 and m["difficult_direct_answer"] is False and pixel(row) == RED
    # --format names the layout; the official JSON keeps direct_answers as a list
    official = {k: v for k, v in rows[0].items() if k != "image"}
    official.update(direct_answers=direct, image="a.png", correct_choice_idx=1)
    (tmp_path / "a.png").write_bytes(png(BLUE))
    src = tmp_path / "aokvqa_v1p0_val.json"
    src.write_text(json.dumps([official]))
    result, out = convert(tmp_path, src, format="aokvqa")
    assert (result.layout, out[0]["answer"], meta(out[0])["direct_answers"]) == ("aokvqa", "B", direct)
    # the release itself names the COCO 2017 image by split and image_id (A-OKVQA's get_coco_path)
    release = {k: v for k, v in official.items() if k != "image"}
    release.update(split="val", image_id=461751)
    coco = tmp_path / "coco"
    (coco / "val2017").mkdir(parents=True)
    (coco / "val2017" / "000000461751.jpg").write_bytes(png(GREEN))
    src.write_text(json.dumps([release]))
    result, out = convert(tmp_path, src, image_root=coco)
    assert result.layout == "aokvqa" and pixel(out[0]) == GREEN
    assert meta(out[0])["image_id"] == 461751
    (coco / "val2017" / "000000461751.jpg").unlink()
    with pytest.raises(BadRow, match=r"aokvqa_v1p0_val.json: item 0.*val2017/000000461751.jpg"):
        run(Config(out=tmp_path / "y.parquet", input=src, image_root=coco))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**official, "correct_choice_idx": "three"}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'correct_choice_idx': expected a whole number"):
        run(Config(out=tmp_path / "x.parquet", input=bad))


# ---------------------------------------------------------------- charts and math benchmarks

def test_chartqa_m4_label_list_and_lmms_lab_rows(tmp_path):
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("query", pa.string()), ("label", pa.list_(pa.string())), ("human_or_machine", pa.int64())])
    rows = [{"image": hf_image(RED), "query": "What is the value of the highest bar?", "label": ["52"],
             "human_or_machine": 0},
            {"image": hf_image(BLUE), "query": "Is the blue line above the red one in 2015?", "label": ["Yes"],
             "human_or_machine": 1},
            {"image": hf_image(GREEN), "query": "Which two years had the same value?", "label": ["2015", "2016"],
             "human_or_machine": 0}]
    src = write_parquet(tmp_path / "train-00000-of-00003.parquet", rows, schema)
    result, out = convert(tmp_path, src)
    assert result.layout == "chartqa" and [r["task"] for r in out] == ["chartqa"] * 3
    assert [(r["answer"], r["answer_type"]) for r in out] == [("52", "number"), ("Yes", "text"), ("2015", "number")]
    assert out[0]["prompt"] == "What is the value of the highest bar?" and pixel(out[1]) == BLUE
    assert meta(out[0]) == {"human_or_machine": "human"} and meta(out[1])["human_or_machine"] == "machine"
    assert meta(out[2])["answers"] == ["2015", "2016"]

    # the GitHub release: test/test_human.json beside test/png/
    (tmp_path / "test" / "png").mkdir(parents=True)
    (tmp_path / "test" / "png" / "41699051005347.png").write_bytes(png(GREEN))
    src = tmp_path / "test" / "test_human.json"
    src.write_text(json.dumps([{"imgname": "41699051005347.png", "query": "How many food item is shown in the bar "
                                "graph?", "label": "14"}]))
    result, out = convert(tmp_path, src)
    assert (result.layout, out[0]["answer"], pixel(out[0]), meta(out[0])) == ("chartqa", "14", GREEN, {})
    assert out[0]["images"][0]["path"] == "png/41699051005347.png"

    lmms = [{"type": "human_test", "question": "How many bars are there?", "answer": "4", "image": hf_image(RED)}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "test-00000.parquet", lmms))
    assert (result.layout, out[0]["prompt"], out[0]["answer"], meta(out[0])) == (
        "rows", "How many bars are there?", "4", {"type": "human_test"})


def test_mathvision_options_and_decoded_image(tmp_path):
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.list_(pa.string())),
                        ("image", pa.string()), ("decoded_image", pa.struct([("bytes", pa.binary()),
                                                                             ("path", pa.string())])),
                        ("answer", pa.string()), ("solution", pa.string()), ("level", pa.int64()),
                        ("subject", pa.string())])
    rows = [{"id": "1", "question": "Which number is hidden behind the square?", "options": ["1", "3", "5", "7", "9"],
             "image": "images/1.jpg", "decoded_image": hf_image(GREEN, "images/1.jpg"), "answer": "B",
             "solution": None, "level": 2, "subject": "arithmetic"},
            {"id": "2", "question": "How long is the side AB?", "options": [], "image": "images/2.jpg",
             "decoded_image": hf_image(RED, "images/2.jpg"), "answer": "2.50", "solution": "AB = 5/2.",
             "level": 3, "subject": "metric geometry - length"}]
    src = write_parquet(tmp_path / "test-00000-of-00001.parquet", rows, schema)
    result, out = convert(tmp_path, src)  # no images/ folder: the pictures come from decoded_image
    assert result.layout == "rows" and [r["id"] for r in out] == ["1", "2"]
    a, b = out
    assert (a["answer"], a["answer_type"], a["choices"]) == ("B", "choice", ["1", "3", "5", "7", "9"])
    assert a["prompt"] == "Which number is hidden behind the square?\nA. 1\nB. 3\nC. 5\nD. 7\nE. 9"
    assert (b["answer"], b["answer_type"], b["choices"]) == ("2.5", "number", None)
    assert b["prompt"] == "How long is the side AB?"
    assert pixel(a) == GREEN and a["images"][0]["path"] == "images/1.jpg" and len(a["images"]) == 1
    assert meta(a) == {"level": 2, "subject": "arithmetic", "solution": None}
    assert meta(b)["solution"] == "AB = 5/2." and meta(b)["raw_answer"] == "2.50"


def test_mathverse_testmini_inline_options_and_text_only_version(tmp_path):
    common = {"problem_index": "1", "question_for_eval": "...", "query_wo": "Please directly answer ...",
              "query_cot": "Please first conduct reasoning ...",
              "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}}
    rows = [{**common, "sample_index": "1", "problem_version": "Text Dominant", "image": hf_image(RED),
             "question": "As shown in the figure, AB ∥ CD, angle 1 = 45°, what is angle 2?\nChoices:\nA:145°\nB:135°\n"
                         "C:125°\nD:115°", "answer": "B", "question_type": "multi-choice"},
            {**common, "sample_index": "6", "problem_version": "Text Only", "image": None,
             "question": "AB = 8 and M is the midpoint of AB. How long is AM?", "answer": "4",
             "question_type": "free-form"}]
    src = tmp_path / "testmini.parquet"
    write_parquet(src, rows)
    result, out = convert(tmp_path, src)
    assert result.layout == "rows"
    a, b = out
    assert (a["answer"], a["answer_type"], a["choices"]) == ("B", "choice", None)
    assert a["prompt"] == rows[0]["question"] and pixel(a) == RED
    assert (b["answer"], b["answer_type"], b["images"]) == ("4", "number", [])
    m = meta(a)
    assert (m["sample_index"], m["problem_version"], m["question_type"], m["subject"], m["split"]) == (
        "1", "Text Dominant", "multi-choice", "Plane Geometry", "testmini")
    # the JSON release writes "" for the text-only version's image
    src = tmp_path / "testmini.json"
    src.write_text(json.dumps([{**rows[1], "image": ""}]))
    result, out = convert(tmp_path, src)
    assert (out[0]["images"], out[0]["answer"]) == ([], "4")


# ---------------------------------------------------------------- conversations

def test_llama_factory_sharegpt_messages(tmp_path):
    (tmp_path / "mllm_demo_data").mkdir()
    (tmp_path / "mllm_demo_data" / "1.jpg").write_bytes(png(RED))
    demo = [{"messages": [{"content": "<image>Who are they?", "role": "user"},
                          {"content": "They're Kane and Gretzka from Bayern Munich.", "role": "assistant"},
                          {"content": "What are they doing?", "role": "user"},
                          {"content": "They are celebrating on the soccer field.", "role": "assistant"}],
             "images": ["mllm_demo_data/1.jpg"]}]
    src = tmp_path / "mllm_demo.json"
    src.write_text(json.dumps(demo, indent=2))
    result, out = convert(tmp_path, src)
    row = out[0]
    assert result.layout == "llava"
    assert (row["prompt"], row["answer"], row["answer_type"]) == (
        "Who are they?", "They're Kane and Gretzka from Bayern Munich.", "text")
    assert row["images"][0]["path"] == "mllm_demo_data/1.jpg" and meta(row) == {"turns": 4}


def test_trl_messages_with_typed_content_parts(tmp_path):
    part = pa.struct([("index", pa.int64()), ("text", pa.string()), ("type", pa.string())])
    schema = pa.schema([("messages", pa.list_(pa.struct([("content", pa.list_(part)), ("role", pa.string())]))),
                        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])))])
    rows = [{"messages": [
        {"role": "user", "content": [{"index": 0, "text": None, "type": "image"},
                                     {"index": None, "text": "\nWhat color is the square?", "type": "text"}]},
        {"role": "assistant", "content": [{"index": None, "text": "Red.", "type": "text"}]}],
        "images": [hf_image(RED)]}]
    src = write_parquet(tmp_path / "train-00000-of-00020.parquet", rows, schema)
    result, out = convert(tmp_path, src)
    assert result.layout == "llava"
    assert (out[0]["prompt"], out[0]["answer"], pixel(out[0])) == ("What color is the square?", "Red.", RED)

    # TRL prompt-only conversational rows for GRPO: the answer comes from solution
    (tmp_path / "c.png").write_bytes(png(BLUE))
    grpo = {"prompt": [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
                       {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many squares?"}]}],
            "images": ["c.png"], "solution": "<answer> 3 </answer>"}
    src = tmp_path / "grpo.jsonl"
    src.write_text(json.dumps(grpo) + "\n")
    result, out = convert(tmp_path, src)
    row = out[0]
    assert (result.layout, row["prompt"], row["system"], row["answer"], row["answer_type"]) == (
        "llava", "How many squares?", "Answer briefly.", "3", "number")
    # TRL prompt-completion conversational rows
    pc = {"prompt": [{"role": "user", "content": "<image>What shape is it?"}],
          "completion": [{"role": "assistant", "content": "A square."}], "images": ["c.png"]}
    src.write_text(json.dumps(pc) + "\n")
    result, out = convert(tmp_path, src)
    assert (out[0]["prompt"], out[0]["answer"], meta(out[0])) == ("What shape is it?", "A square.", {})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "image"}]},
                                            {"role": "assistant", "content": "x"}]}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'messages': turn of 'user' has no text"):
        run(Config(out=tmp_path / "x.parquet", input=bad))


# ---------------------------------------------------------------- R1-style RL sets

def test_r1_sets_answer_in_tags_boxed_or_plain(tmp_path):
    # R1-V clevr_cogen_a_train
    clevr = [{"image": hf_image(RED), "problem": "How many items are there in the image?",
              "solution": "<answer> 3 </answer>"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "clevr.parquet", clevr))
    assert (result.layout, out[0]["prompt"], out[0]["answer"], out[0]["answer_type"]) == (
        "rows", "How many items are there in the image?", "3", "number")
    assert meta(out[0]) == {}

    # lmms-lab/multimodal-open-r1-8k-verified: a worked solution ending in tags; original_* kept
    r1 = [{"image": hf_image(BLUE), "problem": "Find the area of the triangle.",
           "solution": "<think>Half of base times height: 4 * 5 / 2.</think>\n<answer>10</answer>",
           "original_question": "Find the area.", "original_answer": "10"}]
    _, out = convert(tmp_path, write_parquet(tmp_path / "r1.parquet", r1))
    assert (out[0]["answer"], out[0]["answer_type"]) == ("10", "number")
    assert meta(out[0])["solution"] == r1[0]["solution"] and meta(out[0])["original_answer"] == "10"

    # TIGER-Lab/ViRL39K: every answer in \boxed{}; images as paths from images.zip
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Processed-a1-0.jpg").write_bytes(png(GREEN))
    virl = [{"question": "<image>What is x in the figure?", "answer": "\\boxed{3}", "category": "Math",
             "source": "MM-Eureka", "qid": "a1", "PassRate_32BTrained": 0.5, "PassRate_7BTrained": None,
             "image": ["images/Processed-a1-0.jpg"]},
            {"question": "<image>Which option is right?\nA. 1\nB. 2", "answer": "\\boxed{B}", "category": "Math",
             "source": "M3CoT", "qid": "a2", "PassRate_32BTrained": 0.25, "PassRate_7BTrained": 1.0,
             "image": ["images/Processed-a1-0.jpg"]}]
    _, out = convert(tmp_path, write_parquet(tmp_path / "39Krelease.parquet", virl))
    assert [(r["answer"], r["answer_type"]) for r in out] == [("3", "number"), ("B", "choice")]
    assert out[0]["prompt"] == "What is x in the figure?" and pixel(out[0]) == GREEN
    assert meta(out[0])["raw_answer"] == "\\boxed{3}" and meta(out[0])["qid"] == "a1"

    # FanqingM/MMK12: options inline in the question (test), a letter or a value as the answer
    mmk12 = [{"id": "bio-1", "subject": "biology", "image": hf_image(RED),
              "question": "Which structure is shown?\nA. nucleus\nB. ribosome", "answer": "A"},
             {"id": "math-7", "subject": "math", "image": hf_image(BLUE),
              "question": "Find the slope of the line.", "answer": "\\frac{1}{2}"}]
    _, out = convert(tmp_path, write_parquet(tmp_path / "train-00000.parquet", mmk12))
    assert [(r["id"], r["answer"], r["answer_type"]) for r in out] == [
        ("bio-1", "A", "choice"), ("math-7", "\\frac{1}{2}", "number")]
    assert meta(out[1]) == {"subject": "math"}


# ---------------------------------------------------------------- open-ended VQA: several annotators' answers

def test_vqav2_textvqa_and_docvqa_answer_lists(tmp_path):
    vqa_answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                   for i, a in enumerate(["white"] * 7 + ["white and blue", "cream", "white"])]
    vqav2 = [{"question_type": "what color", "multiple_choice_answer": "white", "answers": vqa_answers,
              "image_id": 262148, "answer_type": "other", "question_id": 262148000,
              "question": "What color is the plate?", "image": hf_image(RED)},
             {"question_type": "how many", "multiple_choice_answer": "2", "answers": vqa_answers[:1],
              "image_id": 262149, "answer_type": "number", "question_id": 262149001,
              "question": "How many dogs?", "image": hf_image(BLUE)}]
    src = write_parquet(tmp_path / "validation-00000-of-00001.parquet", vqav2)
    result, out = convert(tmp_path, src)
    assert result.layout == "vqa" and [r["id"] for r in out] == ["262148000", "262149001"]
    assert [(r["answer"], r["answer_type"]) for r in out] == [("white", "text"), ("2", "number")]
    assert out[0]["prompt"] == "What color is the plate?" and pixel(out[0]) == RED
    m = meta(out[0])
    assert m["answers"] == [a["answer"] for a in vqa_answers] and m["vqa_answer_type"] == "other"
    assert m["question_type"] == "what color" and m["image_id"] == 262148

    # TextVQA (facebook/textvqa): ten answer strings, no main answer: the most given one (first on a tie)
    textvqa = [{"image_id": "0054c91397f2fe05", "question_id": 0, "question": "what is the brand of phone?",
                "question_tokens": ["what", "is", "the", "brand", "of", "phone"], "image": hf_image(GREEN),
                "image_width": 1024, "image_height": 730, "answers": ["nokia"] * 4 + ["toshiba"] * 4 + ["samsung"] * 2,
                "image_classes": ["Mobile phone"], "set_name": "val"}]
    (tmp_path / "t").mkdir()
    src = write_parquet(tmp_path / "t" / "validation.parquet", textvqa)
    result, out = convert(tmp_path / "t", src)
    assert (result.layout, out[0]["answer"], out[0]["id"]) == ("vqa", "nokia", "0")
    assert meta(out[0])["answers"].count("toshiba") == 4 and pixel(out[0]) == GREEN

    # DocVQA (lmms-lab/DocVQA): questionId, a short list of accepted answers
    docvqa = {"questionId": "49153", "question": "What is the ‘actual’ value per 1000, during the year 1975?",
              "question_types": ["figure/diagram"], "docId": 14465, "ucsf_document_id": "pybv0228",
              "ucsf_document_page_no": "81", "answers": ["0.28"], "data_split": "val", "image": "doc.png"}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "doc.png").write_bytes(png(BLUE))
    (tmp_path / "d" / "docvqa.jsonl").write_text(json.dumps(docvqa) + "\n")
    result, out = convert(tmp_path / "d", tmp_path / "d" / "docvqa.jsonl")
    assert (result.layout, out[0]["id"], out[0]["answer"], out[0]["answer_type"]) == ("vqa", "49153", "0.28", "number")
    bad = tmp_path / "d" / "bad.jsonl"
    bad.write_text(json.dumps({**docvqa, "answers": [{"text": "0.28"}]}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'answers': expected answer strings"):
        run(Config(out=tmp_path / "x.parquet", input=bad))
