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
    MMBench        VLMEvalKit MMBench_DEV_EN.tsv (index, question, hint, A-D, answer, category, base64 image,
                   source, l2-category, comment, split; a circular copy's image given as another row's index);
                   lmms-lab/MMBench card (image struct, L2-category, "nan" text for missing cells); VLMEvalKit
                   and lmms-eval mmbench prompts ("Hint: ...\nQuestion: ...", options A. ...)
    MMMU           MMMU/MMMU features (id, question with <image N>, options as the text of a list,
                   explanation, image_1..image_7, img_type, answer, topic_difficulty, question_type, subfield)
    MMStar         Lin-Chen/MMStar features (index, question with "Options: A: ..., B: ...", image, answer,
                   category, l2_category, meta_info struct)
    AI2D           lmms-lab/ai2d features (question, options, answer: the index as a string, image);
                   lmms-eval tasks/ai2d/utils.py (target = options[int(answer)])
    MME, POPE      lmms-lab/MME (question_id shared by an image's two questions, answer Yes/No, category),
                   lmms-lab/POPE (id, question_id, question, answer yes/no, image_source, image, category)
    RealWorldQA    xai-org/RealworldQA (image, question listing "A. ..." options, answer letter or value)
    We-Math        We-Math testmini.json and the We-Math/We-Math Hub rows (ID, split, knowledge concept,
                   question, option "A. ...; B. ...", answer letter, image_path, key)
    OCRBench       echo840/OCRBench features (dataset, question, question_type, answer: list of strings,
                   image); the GitHub OCRBench.json (dataset_name, id, image_path, question, answers, type)
    MM-Eureka      FanqingM/MM-Eureka-Dataset JSONL (message: the JSON text of a chat list with file://
                   image parts, answer)
    R1 math sets   leonardPKU/GEOQA_R1V_Train_8K (image, problem, solution <answer>), russwang/ThinkLite-VL-70k
                   (problem, answer, image), hiyouga/geometry3k as EasyR1 first published it (images,
                   problem "<image>...", answer value)
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
    # the Hub shard's name gives the split, kept in metadata too
    assert meta(out[0]) == {"human_or_machine": "human", "source_split": "train"}
    assert meta(out[1])["human_or_machine"] == "machine" and {r["split"] for r in out} == {"train"}
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
    # the Hub shard's name (test-00000-of-00001) gives the split: kept as the row's split and in metadata
    assert meta(a) == {"level": 2, "subject": "arithmetic", "solution": None, "source_split": "test"}
    assert [r["split"] for r in out] == ["test", "test"]
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
    # the options listed inline become the choices; the prompt keeps MathVerse's own listing
    assert (a["answer"], a["answer_type"], a["choices"]) == ("B", "choice", ["145°", "135°", "125°", "115°"])
    assert a["prompt"] == rows[0]["question"] and pixel(a) == RED
    assert (b["answer"], b["answer_type"], b["images"], b["choices"]) == ("4", "number", [], None)
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

    # R1-V's evaluation file (src/eval/prompts/superclevr_test200_counting_problems.jsonl): the image by path,
    # the answer as ground_truth (an int)
    (tmp_path / "superclevr").mkdir()
    (tmp_path / "superclevr" / "superCLEVR_new_025000.png").write_bytes(png(BLUE))
    superclevr = tmp_path / "superclevr_test200_counting_problems.jsonl"
    superclevr.write_text(json.dumps({"image_path": "./superclevr/superCLEVR_new_025000.png",
                                      "question": "How many different items are there in the image?",
                                      "ground_truth": 4}) + "\n")
    result, out = convert(tmp_path, superclevr)
    assert (out[0]["answer"], out[0]["answer_type"], pixel(out[0])) == ("4", "number", BLUE)
    assert "ground_truth" not in meta(out[0]) and "image_path" not in meta(out[0])

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
    # accepted: answers at least 3 annotators gave, and the answer; every annotator's answer kept beside
    assert m["answers"] == ["white"] and m["vqa_answer_type"] == "other"
    assert m["annotator_answers"] == [a["answer"] for a in vqa_answers]
    assert m["question_type"] == "what color" and m["image_id"] == 262148
    # one annotator's answer and no repeats: that answer alone, with the main answer first
    assert (meta(out[1])["answers"], meta(out[1])["annotator_answers"]) == (["2", "white"], ["white"])

    # TextVQA (facebook/textvqa): ten answer strings, no main answer: the most given one (first on a tie)
    textvqa = [{"image_id": "0054c91397f2fe05", "question_id": 0, "question": "what is the brand of phone?",
                "question_tokens": ["what", "is", "the", "brand", "of", "phone"], "image": hf_image(GREEN),
                "image_width": 1024, "image_height": 730, "answers": ["nokia"] * 4 + ["toshiba"] * 4 + ["samsung"] * 2,
                "image_classes": ["Mobile phone"], "set_name": "val"}]
    (tmp_path / "t").mkdir()
    src = write_parquet(tmp_path / "t" / "validation.parquet", textvqa)
    result, out = convert(tmp_path / "t", src)
    assert (result.layout, out[0]["answer"], out[0]["id"]) == ("vqa", "nokia", "0")
    m = meta(out[0])
    assert m["answers"] == ["nokia", "toshiba"] and pixel(out[0]) == GREEN  # samsung: 2 annotators only
    assert m["annotator_answers"] == textvqa[0]["answers"]

    # DocVQA (lmms-lab/DocVQA): questionId, a short list of accepted answers
    docvqa = {"questionId": "49153", "question": "What is the ‘actual’ value per 1000, during the year 1975?",
              "question_types": ["figure/diagram"], "docId": 14465, "ucsf_document_id": "pybv0228",
              "ucsf_document_page_no": "81", "answers": ["0.28"], "data_split": "val", "image": "doc.png"}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "doc.png").write_bytes(png(BLUE))
    (tmp_path / "d" / "docvqa.jsonl").write_text(json.dumps(docvqa) + "\n")
    result, out = convert(tmp_path / "d", tmp_path / "d" / "docvqa.jsonl")
    assert (result.layout, out[0]["id"], out[0]["answer"], out[0]["answer_type"]) == ("vqa", "49153", "0.28", "number")
    (tmp_path / "d" / "equivalent.jsonl").write_text(json.dumps({**docvqa, "answers": ["0.28", ".28", "$0.28"]}) + "\n")
    result, out = convert(tmp_path / "d", tmp_path / "d" / "equivalent.jsonl")
    assert meta(out[0])["answers"] == ["0.28", ".28", "$0.28"]  # no answer repeats: all equivalent answers
    bad = tmp_path / "d" / "bad.jsonl"
    bad.write_text(json.dumps({**docvqa, "answers": [{"text": "0.28"}]}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'answers': expected answer strings"):
        run(Config(out=tmp_path / "x.parquet", input=bad))


# ---------------------------------------------------------------- multimodal benchmarks: options in columns or text

MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split"]


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    """A VLMEvalKit TSV as pandas writes it: tab-separated, a missing cell empty."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, delimiter="\t")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


def b64(color) -> str:
    import base64

    return base64.b64encode(png(color)).decode()


def test_mmbench_vlmevalkit_tsv_option_columns_hint_and_shared_images(tmp_path):
    common = {"category": "physical_property_reasoning", "source": "scienceqa",
              "l2-category": "physical_relation", "comment": None, "split": "dev"}
    rows = [{**common, "index": 0, "question": "Which of these states is farthest north?",
             "hint": "Look at the map.", "A": "West Virginia", "B": "Louisiana", "C": None, "D": None,
             "answer": "A", "image": b64(RED)},
            {**common, "index": 1, "question": "What is the color of the square?", "hint": None, "A": "red",
             "B": "green", "C": "blue", "D": "yellow", "answer": "C", "image": b64(BLUE)},
            # a circular copy: the options rotated, the image given as the index of the row that holds it
            {**common, "index": 1000000, "question": "Which of these states is farthest north?",
             "hint": "Look at the map.", "A": "Louisiana", "B": "West Virginia", "C": None, "D": None,
             "answer": "B", "image": "0"}]
    src = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", MMBENCH_COLUMNS, rows)
    result, out = convert(tmp_path, src)
    assert result.layout == "mmbench" and [r["id"] for r in out] == ["0", "1", "1000000"]
    a, b, c = out
    assert a["prompt"] == ("Hint: Look at the map.\nQuestion: Which of these states is farthest north?\n"
                           "A. West Virginia\nB. Louisiana")
    assert (a["choices"], a["answer"], a["answer_type"], a["task"]) == (
        ["West Virginia", "Louisiana"], "A", "choice", "mmbench")
    assert b["prompt"] == "What is the color of the square?\nA. red\nB. green\nC. blue\nD. yellow"
    assert (b["answer"], pixel(b)) == ("C", BLUE)
    assert (c["choices"], c["answer"], pixel(c)) == (["Louisiana", "West Virginia"], "B", RED)
    m = meta(a)
    assert m == {"category": "physical_property_reasoning", "source": "scienceqa",
                 "l2-category": "physical_relation", "source_split": "dev"}

    # lmms-lab/MMBench (en): an image struct, "nan" text for a missing option, hint or comment
    schema = pa.schema([("index", pa.int64()), ("question", pa.string()), ("hint", pa.string()),
                        ("answer", pa.string())] + [(k, pa.string()) for k in "ABCD"] +
                       [("category", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("source", pa.string()), ("L2-category", pa.string()), ("comment", pa.string()),
                        ("split", pa.string())])
    hub = [{"index": 241, "question": "What is the main color of the object?", "hint": "nan", "answer": "B",
            "A": "red", "B": "blue", "C": "nan", "D": "nan", "category": "attribute_recognition",
            "image": hf_image(GREEN), "source": "MMBench", "L2-category": "finegrained_perception (instance-level)",
            "comment": "nan", "split": "dev"}]
    src = write_parquet(tmp_path / "dev-00000-of-00001.parquet", hub, schema)
    result, out = convert(tmp_path, src)
    row = out[0]
    assert (result.layout, row["id"], row["answer"], row["choices"]) == ("mmbench", "241", "B", ["red", "blue"])
    assert row["prompt"] == "What is the main color of the object?\nA. red\nB. blue" and pixel(row) == GREEN
    assert "comment" not in meta(row) and meta(row)["L2-category"] == "finegrained_perception (instance-level)"

    bad = write_tsv(tmp_path / "bad.tsv", MMBENCH_COLUMNS, [{**rows[1], "B": None}])
    with pytest.raises(BadRow, match=r"bad.tsv: line 2, column 'C': option C is given but option B is empty"):
        run(Config(out=tmp_path / "x.parquet", input=bad))
    lost = write_tsv(tmp_path / "lost.tsv", MMBENCH_COLUMNS, [rows[2]])
    with pytest.raises(BadRow, match=r"lost.tsv: line 2, column 'image': image holds '0', the index of another row"):
        run(Config(out=tmp_path / "y.parquet", input=lost))


MMMU_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MMMU_SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.string()),
                         ("explanation", pa.string())] + [(f"image_{i}", MMMU_IMAGE) for i in range(1, 8)] +
                        [("img_type", pa.string()), ("answer", pa.string()), ("topic_difficulty", pa.string()),
                         ("question_type", pa.string()), ("subfield", pa.string())])


def test_mmmu_options_as_text_numbered_images_and_open_questions(tmp_path):
    no_images = {f"image_{i}": None for i in range(1, 8)}
    rows = [{**no_images, "id": "validation_Accounting_1", "image_1": hf_image(RED),
             "question": "<image 1> Baxter Company has a relevant range of production. What is the total cost?",
             "options": "['$6', '$7', '$8']", "explanation": "", "img_type": "['Tables']", "answer": "B",
             "topic_difficulty": "Medium", "question_type": "multiple-choice", "subfield": "Managerial Accounting"},
            {**no_images, "id": "validation_Art_2", "image_1": hf_image(BLUE), "image_2": hf_image(GREEN),
             "question": "Which painting is older?", "options": "['<image 1>', '<image 2>']", "explanation": "",
             "img_type": "['Paintings']", "answer": "A", "topic_difficulty": "Easy",
             "question_type": "multiple-choice", "subfield": "Fine Arts"},
             {**no_images, "id": "validation_Math_3", "image_1": hf_image(GREEN),
              "question": "In <image 1>, AB = 14 and M is the midpoint of AB. How long is AM?", "options": "[]",
              "explanation": "AM = AB / 2.", "img_type": "['Diagrams']", "answer": "7", "topic_difficulty": "Hard",
              "question_type": "open", "subfield": "Geometry"}]
    src = write_parquet(tmp_path / "validation-00000-of-00001.parquet", rows, MMMU_SCHEMA)
    result, out = convert(tmp_path, src)
    assert result.layout == "rows" and [r["id"] for r in out] == [r["id"] for r in rows]
    a, b, c = out
    # numbered placeholders stay: they say which picture the text (or an option) means
    assert a["prompt"] == rows[0]["question"] + "\nA. $6\nB. $7\nC. $8"
    assert (a["choices"], a["answer"], a["answer_type"]) == (["$6", "$7", "$8"], "B", "choice")
    assert (b["choices"], b["answer"], len(b["images"])) == (["<image 1>", "<image 2>"], "A", 2)
    assert (pixel(b, 0), pixel(b, 1)) == (BLUE, GREEN)
    assert (c["choices"], c["answer"], c["answer_type"], c["prompt"]) == (None, "7", "number", rows[2]["question"])
    m = meta(a)
    assert (m["img_type"], m["topic_difficulty"], m["question_type"], m["subfield"]) == (
        "['Tables']", "Medium", "multiple-choice", "Managerial Accounting")
    assert not any(k.startswith("image_") for k in m) and meta(c)["explanation"] == "AM = AB / 2."


def test_mmstar_options_inline_in_the_question(tmp_path):
    schema = pa.schema([("index", pa.int64()), ("question", pa.string()), ("image", MMMU_IMAGE),
                        ("answer", pa.string()), ("category", pa.string()), ("l2_category", pa.string()),
                        ("meta_info", pa.struct([("source", pa.string()), ("split", pa.string()),
                                                 ("image_path", pa.string())]))])
    question = ("Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is "
                "on the book., B: The suitcase is beneath the cat., C: The suitcase is beside the book., D: The "
                "suitcase is beneath the bed.")
    rows = [{"index": 0, "question": question, "image": hf_image(RED), "answer": "A",
             "category": "coarse perception", "l2_category": "image scene and topic",
             "meta_info": {"source": "MMBench", "split": "val", "image_path": "images/0.jpg"}}]
    src = write_parquet(tmp_path / "val-00000-of-00001.parquet", rows, schema)
    result, out = convert(tmp_path, src)
    row = out[0]
    assert result.layout == "rows" and row["prompt"] == question and pixel(row) == RED
    assert row["choices"] == ["The suitcase is on the book.", "The suitcase is beneath the cat.",
                              "The suitcase is beside the book.", "The suitcase is beneath the bed."]
    assert (row["answer"], row["answer_type"]) == ("A", "choice")
    m = meta(row)
    assert (m["index"], m["category"], m["l2_category"], m["meta_info"]["source"]) == (
        0, "coarse perception", "image scene and topic", "MMBench")


def test_ai2d_answer_index_as_text(tmp_path):
    schema = pa.schema([("question", pa.string()), ("options", pa.list_(pa.string())), ("answer", pa.string()),
                        ("image", MMMU_IMAGE)])
    rows = [{"question": "Which of these define dairy item", "options": ["c", "D", "b", "a"], "answer": "1",
             "image": hf_image(RED)},
            # numeric options: "0" is the index of "3", not an option's text
            {"question": "How many stages are shown?", "options": ["3", "0", "5", "4"], "answer": "0",
             "image": hf_image(BLUE)}]
    src = write_parquet(tmp_path / "test-00000-of-00001.parquet", rows, schema)
    result, out = convert(tmp_path, src)
    assert result.layout == "ai2d" and [r["task"] for r in out] == ["ai2d"] * 2
    assert [(r["answer"], r["answer_type"]) for r in out] == [("B", "choice"), ("A", "choice")]
    assert out[0]["prompt"] == "Which of these define dairy item\nA. c\nB. D\nC. b\nD. a"
    assert out[0]["choices"] == ["c", "D", "b", "a"] and meta(out[1]) == {"answer_index": 0, "source_split": "test"}
    assert pixel(out[1]) == BLUE


def test_plain_rows_whose_answer_is_an_option_text_are_not_taken_for_ai2d(tmp_path):
    # The same four columns as lmms-lab/ai2d, but the answer is the text of an option ("3" among "2", "3",
    # "4"), as a plain rows file writes it: matched by text (B), not read as an index (D, out of range).
    src = tmp_path / "counts.jsonl"
    src.write_text(json.dumps({"question": "How many cubes?", "options": ["2", "3", "4"], "answer": "3",
                               "image": ""}) + "\n")
    result, out = convert(tmp_path, src)
    assert result.layout == "rows"
    assert (out[0]["answer"], out[0]["answer_type"], out[0]["choices"]) == ("B", "choice", ["2", "3", "4"])

def test_mme_pope_and_realworldqa_yes_no_and_listed_options(tmp_path):
    # lmms-lab/MME: two questions per image share a question_id (the image's path)
    mme = [{"question_id": "code_reasoning/0020.png", "image": hf_image(RED),
            "question": "Is a c++ code shown in the picture? Please answer yes or no.", "answer": "Yes",
            "category": "code_reasoning"},
           {"question_id": "code_reasoning/0020.png", "image": hf_image(RED),
            "question": "Is a python code shown in the picture? Please answer yes or no.", "answer": "No",
            "category": "code_reasoning"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "test-00000-of-00004.parquet", mme))
    assert result.layout == "rows" and len({r["id"] for r in out}) == 2
    assert [(r["answer"], r["answer_type"]) for r in out] == [("Yes", "text"), ("No", "text")]
    assert out[0]["prompt"] == mme[0]["question"] and out[0]["choices"] is None
    assert meta(out[0]) == {"question_id": "code_reasoning/0020.png", "category": "code_reasoning",
                            "source_split": "test"}

    # lmms-lab/POPE
    pope = [{"id": "0", "question_id": "1", "question": "Is there a snowboard in the image?", "answer": "yes",
             "image_source": "COCO_val2014_000000310196", "image": hf_image(BLUE), "category": "adversarial"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "pope.parquet", pope))
    row = out[0]
    assert (result.layout, row["id"], row["answer"], row["answer_type"], pixel(row)) == ("rows", "0", "yes", "text", BLUE)
    assert meta(row) == {"question_id": "1", "image_source": "COCO_val2014_000000310196", "category": "adversarial"}

    # xai-org/RealworldQA: options listed in the question, or a free-form answer
    rwqa = [{"image": hf_image(GREEN), "question": "Which object is closer?\nA. The car\nB. The truck\nPlease answer "
             "directly with only the letter of the correct option and nothing else.", "answer": "B"},
            {"image": hf_image(GREEN), "question": "How many lanes are there? Please answer directly with a single "
             "word or number.", "answer": "3"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "rwqa.parquet", rwqa))
    assert [(r["answer"], r["answer_type"], r["choices"]) for r in out] == [
        ("B", "choice", ["The car", "The truck"]), ("3", "number", None)]
    assert out[0]["prompt"] == rwqa[0]["question"]


def test_wemath_option_text_and_image_path(tmp_path):
    record = {"ID": "3steps_1", "split": "testmini", "knowledge concept": "Properties and Understanding of Squares",
              "question": "As shown in the figure, the perimeter of the square is 32. What is its side length?",
              "option": "A. 6; B. 8; C. 10; D. 12; E. No correct answer", "answer": "B",
              "image_path": "3steps_1.png", "key": "3steps_1-1", "question number": 1,
              "knowledge concept description": "A square has four equal sides."}
    (tmp_path / "3steps_1.png").write_bytes(png(RED))
    src = tmp_path / "testmini.json"
    src.write_text(json.dumps([record, {**record, "key": "3steps_1-2", "answer": "E"}]))
    result, out = convert(tmp_path, src)
    row = out[0]
    assert result.layout == "wemath" and row["task"] == "wemath" and len({r["id"] for r in out}) == 2
    assert row["choices"] == ["6", "8", "10", "12", "No correct answer"]
    assert row["prompt"] == record["question"] + "\nA. 6\nB. 8\nC. 10\nD. 12\nE. No correct answer"
    assert [(r["answer"], r["answer_type"]) for r in out] == [("B", "choice"), ("E", "choice")]
    assert pixel(row) == RED and row["images"][0]["path"] == "3steps_1.png"
    m = meta(row)
    assert (m["ID"], m["key"], m["knowledge concept"], m["source_split"]) == (
        "3steps_1", "3steps_1-1", "Properties and Understanding of Squares", "testmini")
    # the Hub Parquet holds the picture in image_path
    hub = [{**record, "image_path": hf_image(BLUE)}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "testmini-00000-of-00001.parquet", hub))
    assert (result.layout, out[0]["answer"], pixel(out[0])) == ("wemath", "B", BLUE)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**record, "option": "six or eight"}) + "\n")
    with pytest.raises(BadRow, match=r"bad.jsonl: line 1, column 'option': expected the options"):
        run(Config(out=tmp_path / "x.parquet", input=bad))


def test_ocrbench_accepted_answer_lists(tmp_path):
    schema = pa.schema([("dataset", pa.string()), ("question", pa.string()), ("question_type", pa.string()),
                        ("answer", pa.list_(pa.string())), ("image", MMMU_IMAGE)])
    rows = [{"dataset": "IIIT5K", "question": "what is written in the image?",
             "question_type": "Regular Text Recognition", "answer": ["CHOICE"], "image": hf_image(RED)},
            {"dataset": "ChartQA", "question": "How many bars are there?", "question_type": "Doc-oriented VQA",
             "answer": ["3", "three"], "image": hf_image(BLUE)}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "test-00000-of-00001.parquet", rows, schema))
    assert result.layout == "ocrbench" and [r["task"] for r in out] == ["ocrbench"] * 2
    assert [(r["answer"], r["answer_type"]) for r in out] == [("CHOICE", "text"), ("3", "number")]
    assert meta(out[1]) == {"answers": ["3", "three"], "dataset": "ChartQA", "question_type": "Doc-oriented VQA",
                            "source_split": "test"}
    # the GitHub release: OCRBench.json, answers as text or a list, image_path under OCRBench_Images/
    (tmp_path / "OCRBench_Images" / "IIIT5K").mkdir(parents=True)
    (tmp_path / "OCRBench_Images" / "IIIT5K" / "1_1.png").write_bytes(png(GREEN))
    release = [{"dataset_name": "IIIT5K", "id": 0, "image_path": "IIIT5K/1_1.png",
                "question": "what is written in the image?", "answers": "CHOICE", "type": "Regular Text Recognition"}]
    src = tmp_path / "OCRBench.json"
    src.write_text(json.dumps(release))
    result, out = convert(tmp_path, src, image_root=tmp_path / "OCRBench_Images")
    assert (result.layout, out[0]["answer"], pixel(out[0])) == ("ocrbench", "CHOICE", GREEN)
    assert meta(out[0])["answers"] == ["CHOICE"] and meta(out[0])["id"] == 0


def test_mm_eureka_message_text_and_r1_math_sets(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(png(RED))
    # FanqingM/MM-Eureka-Dataset: the conversation as the JSON text of a message list, file:// image paths
    message = [{"role": "user", "content": [{"type": "image", "image": f"file://{tmp_path / 'images' / '1.png'}"},
                                            {"type": "text", "text": "<image>\nWhat is the value of x?"}]}]
    eureka = {"id": "1", "message": json.dumps(message), "answer": "\\boxed{3}"}
    src = tmp_path / "mm_eureka.jsonl"
    src.write_text(json.dumps(eureka) + "\n")
    result, out = convert(tmp_path, src)
    row = out[0]
    assert (result.layout, row["prompt"], row["answer"], row["answer_type"], pixel(row)) == (
        "llava", "What is the value of x?", "3", "number", RED)
    assert row["id"] == "1" and meta(row) == {"raw_answer": "\\boxed{3}"}

    # R1-V leonardPKU/GEOQA_R1V_Train_8K: problem, solution with the answer in tags
    geoqa = [{"image": hf_image(BLUE), "problem": "As shown in the figure, AB ∥ CD, angle 1 = 50°. What is angle 2?",
              "solution": "<answer>130</answer>"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "geoqa.parquet", geoqa))
    assert (result.layout, out[0]["answer"], out[0]["answer_type"], meta(out[0])) == ("rows", "130", "number", {})

    # russwang/ThinkLite-VL-70k: problem (options listed), answer, image
    thinklite = [{"problem": "What is shown?\nChoices:\nA. a cat\nB. a dog", "answer": "B", "image": hf_image(GREEN)},
                 {"problem": "How many apples are there?", "answer": "4", "image": hf_image(GREEN)}]
    _, out = convert(tmp_path, write_parquet(tmp_path / "thinklite.parquet", thinklite))
    assert [(r["answer"], r["answer_type"], r["choices"]) for r in out] == [
        ("B", "choice", ["a cat", "a dog"]), ("4", "number", None)]
    assert out[0]["prompt"] == thinklite[0]["problem"]

    # hiyouga/geometry3k as EasyR1 first published it: images list, "<image>" in the problem, answer value
    schema = pa.schema([("images", pa.list_(MMMU_IMAGE)), ("problem", pa.string()), ("answer", pa.string())])
    easyr1 = [{"images": [hf_image(RED)], "problem": "<image>Find x. Round to the nearest tenth.", "answer": "7.4"}]
    result, out = convert(tmp_path, write_parquet(tmp_path / "train-00000-of-00001.parquet", easyr1, schema))
    assert (result.layout, out[0]["prompt"], out[0]["answer"], out[0]["answer_type"], pixel(out[0])) == (
        "rows", "Find x. Round to the nearest tenth.", "7.4", "number", RED)
