"""The extraction policy and the rules that keep rewards from being gamed: one table per rule, each case
stating what it checks, then the score summary's trivial-think count and eval's strict/lenient report."""

from __future__ import annotations

import json

import pytest

from rftcli.rewards import get_reward
from rftcli.rewards.diagnostics import Diagnostics
from rftcli.rewards.format import make_format

A = "<answer>{}</answer>".format
T = "<think>I count the objects in the image.</think>"
OPTIONS = ["5", "5 \\sqrt { 2 }", "10", "\\dfrac { 1 } { 2 }", "90 ^ { \\circ }", "Paris"]


def value(reward: str, completion: str, answer: str, answer_type: str | None = None, choices=None):
    return get_reward(reward)([completion], answer=[answer], answer_type=[answer_type], choices=[choices])[0]


# Rule 1: a number is a whole token - never digits inside a word, an identifier, a file name or a URL.
WHOLE_TOKEN = [
    ("digits glued to letters", "accuracy_lenient", "abc2def", "2", "number", 0.0),
    ("an identifier", "accuracy_lenient", "It is CLEVR_val_000003.", "3", "number", 0.0),
    ("an identifier, count", "count_lenient", "see CLEVR_val_000003", "3", "number", 0.0),
    ("a file name", "accuracy_lenient", "look at img_3.png", "3", "number", 0.0),
    ("a URL", "accuracy_lenient", "from http://x.org/3", "3", "number", 0.0),
    ("inside the slot too", "accuracy", A("abc2def"), "2", "number", 0.0),
    ("a word in the slot", "count", A("item3"), "3", "number", 0.0),
    ("a whole token", "accuracy_lenient", "I see 3.", "3", "number", 1.0),
    ("a unit glued on is still the number", "accuracy", A("3cm"), "3", "number", 1.0),
]


@pytest.mark.parametrize("rule,reward,completion,answer,answer_type,expected", WHOLE_TOKEN,
                         ids=[c[0] for c in WHOLE_TOKEN])
def test_a_number_is_a_whole_token(rule, reward, completion, answer, answer_type, expected):
    assert value(reward, completion, answer, answer_type) == expected


# Rule 2: training rewards pay only for the answer slot (<answer>, else \boxed{}); the fallback is opt-in.
SLOT_ONLY = [
    ("no slot: strict pays nothing", "accuracy", T + "So it is 3.", "3", "number", 0.0),
    ("no slot: lenient opts in", "accuracy_lenient", T + "So it is 3.", "3", "number", 1.0),
    ("no slot: count", "count", T + "There are 3.", "3", "number", 0.0),
    ("no slot: count_lenient", "count_lenient", T + "There are 3.", "3", "number", 1.0),
    ("no slot: iou", "iou", T + "It is [0, 0, 10, 10].", "[0, 0, 10, 10]", "box", 0.0),
    ("no slot: iou_lenient", "iou_lenient", T + "It is [0, 0, 10, 10].", "[0, 0, 10, 10]", "box", 1.0),
    ("no slot: a choice phrase", "accuracy", T + "The answer is (B).", "B", "choice", 0.0),
    ("\\boxed{} is a slot", "accuracy", T + "So \\boxed{3}.", "3", "number", 1.0),
    ("<answer> is the slot", "accuracy", T + A("3"), "3", "number", 1.0),
    ("only inside think", "accuracy_lenient", "<think>It is <answer>3</answer>, 3.</think>", "3", "number", 0.0),
    ("an empty slot does not fall back", "accuracy_lenient", T + A("") + " 3", "3", "number", 0.0),
]


@pytest.mark.parametrize("rule,reward,completion,answer,answer_type,expected", SLOT_ONLY, ids=[c[0] for c in SLOT_ONLY])
def test_training_rewards_pay_only_for_the_answer_slot(rule, reward, completion, answer, answer_type, expected):
    assert value(reward, completion, answer, answer_type) == expected


# Rule 3: more than one distinct candidate answer in the slot is wrong, not a lucky match.
TWO_ANSWERS = [
    ("two answer blocks", "accuracy", A("3") + " or " + A("4"), "4", "number", None, 0.0),
    ("two answer blocks, the other gold", "accuracy", A("3") + " or " + A("4"), "3", "number", None, 0.0),
    ("two boxed", "accuracy", "\\boxed{3} or \\boxed{4}", "4", "number", None, 0.0),
    ("the same answer twice", "accuracy", A("4") + " so " + A(" 4 "), "4", "number", None, 1.0),
    ("a hedge", "accuracy", A("3 or 4"), "3", "number", None, 0.0),
    ("a sentence with two numbers", "count", A("There are 3 cubes and 4 spheres."), "3", "number", None, 0.0),
    ("two letters", "accuracy", A("B or C"), "B", "choice", None, 0.0),
    ("a letter then another label", "accuracy", A("B. C."), "B", "choice", None, 0.0),
    ("a letter with another option's text", "accuracy", A("B) 10"), "B", "choice", OPTIONS, 0.0),
    ("two boxes in two slots", "iou", A("[0, 0, 10, 10]") + A("[50, 50, 60, 60]"), "[0, 0, 10, 10]", "box", None,
     0.0),
]


@pytest.mark.parametrize("rule,reward,completion,answer,answer_type,choices,expected", TWO_ANSWERS,
                         ids=[c[0] for c in TWO_ANSWERS])
def test_two_answers_in_the_slot_are_wrong(rule, reward, completion, answer, answer_type, choices, expected):
    assert value(reward, completion, answer, answer_type, choices) == expected


# Rule 4: choices match by letter in its common forms, by option text after LaTeX normalisation, and
# numerically where both sides are numbers or simple formulas.
CHOICES = [
    ("letter", A("B"), "B", 1.0),
    ("(letter)", A("(B)"), "B", 1.0),
    ("letter.", A("B."), "B", 1.0),
    ("letter) text", A("B) 5\\sqrt{2}"), "B", 1.0),
    ("Option letter", A("Option B"), "B", 1.0),
    ("the answer is letter", A("The answer is B."), "B", 1.0),
    ("boxed letter", "\\boxed{B}", "B", 1.0),
    ("option text without LaTeX spacing", A("5\\sqrt{2}"), "B", 1.0),
    ("option text with \\left/\\right", A("5\\sqrt{\\left(2\\right)}"), "B", 1.0),
    ("\\frac for \\dfrac", A("\\frac{1}{2}"), "D", 1.0),
    ("degrees as a symbol", A("90°"), "E", 1.0),
    ("degrees as ^\\circ", A("90^\\circ"), "E", 1.0),
    ("numerically: \\sqrt{50} is 5\\sqrt{2}", A("\\sqrt{50}"), "B", 1.0),
    ("numerically: 0.5 is \\dfrac12", A("0.5"), "D", 1.0),
    ("option text as text", A("paris."), "F", 1.0),
    ("the gold as option text", A("B"), "5 \\sqrt { 2 }", 1.0),
    ("another letter", A("C"), "B", 0.0),
    ("another option's text", A("10"), "B", 0.0),
    ("a neighbouring number", A("6"), "A", 0.0),
]


@pytest.mark.parametrize("rule,completion,answer,expected", CHOICES, ids=[c[0] for c in CHOICES])
def test_choices_by_letter_forms_and_normalised_option_text(rule, completion, answer, expected):
    assert value("accuracy", completion, answer, "choice", OPTIONS) == expected


# Rule 5: counts and numbers in short sentences inside the slot are read; words and digits agree.
SENTENCES = [
    ("a count in a sentence", A("There are 3 objects."), "3", 1.0),
    ("a word in a sentence", A("There are three objects."), "3", 1.0),
    ("a count with its noun", A("3 objects"), "3", 1.0),
    ("a word alone", A("three"), "3", 1.0),
    ("a word against a digit gold", A("3"), "three", 1.0),
    ("the wrong count in a sentence", A("There are 4 objects."), "3", 0.0),
    ("two counts", A("There are 3 red and 2 blue objects."), "3", 0.0),
    ("a negation", A("There are not 3 objects."), "3", 0.0),
    ("a formula is not a sentence", A("y = 2x + 3"), "3", 0.0),
]


@pytest.mark.parametrize("rule,completion,answer,expected", SENTENCES, ids=[c[0] for c in SENTENCES])
def test_counts_and_numbers_in_short_sentences(rule, completion, answer, expected):
    assert value("accuracy", T + completion, answer, "number") == expected
    assert value("count", T + completion, answer, "number") == expected


# Rule 6: the strict format needs a think block of at least MIN_THINK_WORDS words (a factory setting).
FORMAT = [
    ("a one-character think", "<think>.</think><answer>3</answer>", 3, 0.0),
    ("a one-word think", "<think>ok</think><answer>3</answer>", 3, 0.0),
    ("a three-word think", "<think>three red squares</think><answer>3</answer>", 3, 1.0),
    ("the minimum lowered to one word", "<think>ok</think><answer>3</answer>", 1, 1.0),
    ("an empty think even at minimum 0", "<think> </think><answer>3</answer>", 0, 0.0),
]


@pytest.mark.parametrize("rule,completion,min_words,expected", FORMAT, ids=[c[0] for c in FORMAT])
def test_format_minimum_think_length(rule, completion, min_words, expected):
    assert make_format(min_think_words=min_words)([completion]) == [expected]
    if min_words == 3:
        assert get_reward("format")([completion]) == [expected]


def test_format_setting_is_checked():
    with pytest.raises(ValueError, match="min_think_words must be >= 0"):
        make_format(min_think_words=-1)


# Rule 7: a degenerate true box abstains (no box can overlap a point or a line), never a silent 0.
BOXES = [
    ("a point-sized true box, identical prediction", "[5, 5, 5, 5]", "[5, 5, 5, 5]", None),
    ("a line-shaped true box", "[0, 0, 10, 10]", "[5, 0, 5, 10]", None),
    ("an ordinary box, identical prediction", "[0, 0, 10, 10]", "[0, 0, 10, 10]", 1.0),
]


@pytest.mark.parametrize("rule,pred,gold,expected", BOXES, ids=[c[0] for c in BOXES])
def test_degenerate_true_boxes_abstain(rule, pred, gold, expected):
    for reward in ("iou", "iou_50", "iou_75", "accuracy"):
        assert value(reward, T + A(pred), gold, "box") == expected, reward


# Rule 8: decided cases of math answers.
DECIDED = [
    ("a constant expression is its value: e^{i pi} = -1", "e^{i\\pi}", "-1", 1.0),
    ("... and not another value", "e^{i\\pi}", "1", 0.0),
    ("i is the imaginary unit when it is the only letter", "i^2", "-1", 1.0),
    ("a lone variable on the left is a label: y=2x+1 for 2x+1", "y=2x+1", "2x+1", 1.0),
    ("... also when the gold carries it", "2x+1", "y=2x+1", 1.0),
    ("... but the right side must still agree", "y=2x+2", "2x+1", 0.0),
]


@pytest.mark.parametrize("rule,pred,gold,expected", DECIDED, ids=[c[0] for c in DECIDED])
def test_decided_math_cases(rule, pred, gold, expected):
    assert value("accuracy", T + A(pred), gold, "math") == expected


# ---------------------------------------------------------------- the summary and eval

def test_score_summary_counts_trivial_think_blocks_beside_empty_ones():
    d = Diagnostics()
    texts = ["<think>.</think><answer>3</answer>", "<think></think><answer>3</answer>",
             "<think>three red squares</think><answer>3</answer>", "<think>ok</think><answer>3</answer>"]
    d.add(texts, groups=[0, 0, 1, 1], lengths=[1, 2, 3, 4], rewards=[0.0, 1.0, 0.0, 1.0])
    s = d.summary()
    assert (s["think_empty"], s["think_trivial"]) == (0.25, 0.5)


def test_eval_reports_strict_and_lenient_accuracy_side_by_side(tmp_path, dataset, tiny_model_dir):
    from rftcli.stages import eval as eval_stage

    out = tmp_path / "eval"
    result = eval_stage.run(eval_stage.Config(dataset=dataset, models=(str(tiny_model_dir),), labels=("tiny",),
                                              out=out, max_new_tokens=4, limit=2, batch_size=2), progress=False)
    rule = json.loads((out / "summary.json").read_text())["accuracy_rule"]
    assert rule == result.summary["accuracy_rule"]
    assert rule["correct"] == "accuracy" and "answer slot" in rule["note"]
    model = result.summary["models"]["tiny"]
    assert rule["strict"]["tiny"] == model["accuracy"] == model["mean_reward"]["accuracy"]
    assert rule["lenient"]["tiny"] == model["mean_reward"]["accuracy_lenient"]
    assert rule["lenient"]["tiny"] >= rule["strict"]["tiny"]
