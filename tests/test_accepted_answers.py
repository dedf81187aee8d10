"""Accepted alternatives: a text or number answer among the row's `metadata.answers` is paid as `answer` is,
under every answer-slot rule; a VQA answer too few annotators gave is not accepted."""

from __future__ import annotations

import json

import pytest

from rftcli.rewards import get_reward
from rftcli.schema import read_table
from rftcli.stages.prepare_data import Config, run
from rftcli.stages.score import Config as ScoreConfig
from rftcli.stages.score import run as score_run
from tests.test_published_layouts import hf_image, write_parquet

A = "<answer>{}</answer>".format
T = "<think>I read the chart.</think>"
COUCH = json.dumps({"answers": ["couch", "sofa", "settee"], "source": "x"})
YEARS = json.dumps({"answers": ["2015", "2016"]})


def value(reward, completion, answer, answer_type, metadata):
    return get_reward(reward)([completion], answer=[answer], answer_type=[answer_type], choices=[None],
                              metadata=[metadata], num_tokens=[10], max_new_tokens=[100])[0]


CASES = [
    ("the answer", "accuracy", A("couch"), "couch", "text", COUCH, 1.0),
    ("an alternative", "accuracy", T + A("Sofa."), "couch", "text", COUCH, 1.0),
    ("another alternative, strict", "accuracy_strict", A("settee"), "couch", "text", COUCH, 1.0),
    ("an alternative, lenient", "accuracy_lenient", A("sofa"), "couch", "text", COUCH, 1.0),
    ("an alternative, cosine length", "cosine_length", A("sofa"), "couch", "text", COUCH, 1.0),
    ("not listed", "accuracy", A("chair"), "couch", "text", COUCH, 0.0),
    ("not listed, lenient", "accuracy_lenient", A("chair"), "couch", "text", COUCH, 0.0),
    ("a number alternative", "accuracy", A("x = 2,016"), "2015", "number", YEARS, 1.0),
    ("a number alternative, count", "count", A("2016"), "2015", "number", YEARS, 1.0),
    ("a number not listed", "accuracy", A("2017"), "2015", "number", YEARS, 0.0),
    ("a number not listed, count", "count", A("2017"), "2015", "number", YEARS, 0.0),
    # the slot rules stay: two different answers are no answer, even when both are accepted
    ("two accepted answers in two slots", "accuracy", A("couch") + " or " + A("sofa"), "couch", "text", COUCH, 0.0),
    ("two alternatives in two slots", "accuracy", A("sofa") + A("settee"), "couch", "text", COUCH, 0.0),
    ("two accepted numbers in two slots", "accuracy", A("2015") + A("2016"), "2015", "number", YEARS, 0.0),
    ("two accepted counts in two slots", "count", A("2015") + A("2016"), "2015", "number", YEARS, 0.0),
    ("an accepted hedge", "accuracy", A("2015 or 2016"), "2015", "number", YEARS, 0.0),
    ("only inside think", "accuracy", "<think><answer>sofa</answer></think>", "couch", "text", COUCH, 0.0),
    # choice, box and math rows compare with `answer` alone
    ("choice ignores alternatives", "accuracy", A("C"), "B", "choice", json.dumps({"answers": ["B", "C"]}), 0.0),
    ("math ignores alternatives", "accuracy", A("x+2"), "x+1", "math", json.dumps({"answers": ["x+1", "x+2"]}), 0.0),
    ("box ignores alternatives", "accuracy", A("[50, 50, 60, 60]"), "[0, 0, 10, 10]", "box",
     json.dumps({"answers": ["[0, 0, 10, 10]", "[50, 50, 60, 60]"]}), 0.0),
    # rows without alternatives behave as before
    ("no metadata", "accuracy", A("couch"), "couch", "text", None, 1.0),
    ("no metadata, other answer", "accuracy", A("sofa"), "couch", "text", None, 0.0),
    ("metadata without answers", "accuracy", A("sofa"), "couch", "text", '{"source": "sofa"}', 0.0),
    ("answers not a list", "accuracy", A("sofa"), "couch", "text", '{"answers": "sofa"}', 0.0),
    ("metadata not JSON", "accuracy", A("sofa"), "couch", "text", '{"answers": [sofa', 0.0),
    ("metadata not an object", "count", A("4"), "3", "number", '["answers", "4"]', 0.0),
    ("no ground truth abstains", "accuracy", A("sofa"), "", "text", COUCH, None),
]


@pytest.mark.parametrize("rule,reward,completion,answer,answer_type,metadata,expected", CASES,
                         ids=[c[0] for c in CASES])
def test_accepted_alternatives_are_paid_as_the_answer(rule, reward, completion, answer, answer_type, metadata,
                                                       expected):
    got = value(reward, completion, answer, answer_type, metadata)
    if reward == "cosine_length":  # pays a correct answer in (0.5, 1], a wrong one below 0
        got = 1.0 if got > 0 else 0.0
    assert got == expected


def test_a_vqa_minority_answer_is_not_paid_through_score(tmp_path):
    """prepare-data keeps answers 3 annotators gave as accepted; score pays them and not a 1-annotator answer."""
    answers = ["nokia"] * 4 + ["Toshiba"] * 2 + ["toshiba"] + ["samsung"] * 2 + ["motorola"]
    src = write_parquet(tmp_path / "validation.parquet", [
        {"question_id": 0, "question": "what is the brand of phone?", "answers": answers, "image": hf_image()}])
    data = tmp_path / "d.parquet"
    run(Config(out=data, input=src, instruction="none", dedupe=False))
    row = read_table(data, "dataset").table.to_pylist()[0]
    meta = json.loads(row["metadata"])
    assert (row["answer"], meta["answers"], meta["annotator_answers"]) == ("nokia", ["nokia", "Toshiba"], answers)

    picks = ["nokia", "TOSHIBA", "samsung", "motorola", "apple", "nokia</answer><answer>toshiba"]
    rollouts = [{**row, "group_index": 0, "sample_index": i, "completion": T + A(p), "completion_ids": [1],
                 "logprobs": [0.0], "num_tokens": 1, "finish_reason": "stop", "policy": "p", "policy_hash": "p",
                 "backend": "hf", "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 8, "seed": i}
                for i, p in enumerate(picks)]
    from rftcli.schema import write_table

    write_table(tmp_path / "r.parquet", "rollouts", rollouts, {"stage": "rollout"})
    score_run(ScoreConfig(rollouts=tmp_path / "r.parquet", out=tmp_path / "s.parquet", rewards=("accuracy",),
                          workers=1))
    scored = read_table(tmp_path / "s.parquet", "scores").table.column("reward_accuracy").to_pylist()
    assert scored == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_train_grpo_gives_the_rewards_each_rows_metadata(tmp_path):
    """TRL passes every dataset column to the rewards; the training dataset carries metadata for them."""
    from rftcli.training import trl_dataset

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "prompt": "Which year?", "answer": ["2015", "2016"]}, {"id": "b", "prompt": "How many?", "answer": 3}]))
    run(Config(out=tmp_path / "d.parquet", input=src, instruction="none", dedupe=False))
    table = read_table(tmp_path / "d.parquet", "dataset").table
    rows = trl_dataset(table, with_completion=False).to_list()
    by_id = {r["id"]: r for r in rows}
    assert json.loads(by_id["a"]["metadata"])["answers"] == ["2015", "2016"] and by_id["b"]["metadata"] is None
    columns = {k: [r[k] for r in rows] for k in ("answer", "answer_type", "choices", "metadata")}
    completions = [[{"role": "assistant", "content": A("2016")}]] * len(rows)
    assert get_reward("accuracy")(completions, **columns) == [1.0 if r["id"] == "a" else 0.0 for r in rows]
