"""Reward functions: answer extraction, accuracy by answer type, format rules, the registry, time limits."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from rftcli.rewards import builtin_rewards, get_reward, parse_weighted, reward_name
from rftcli.rewards.accuracy import accuracy, infer_answer_type
from rftcli.rewards.format import format_lenient, format_strict
from rftcli.rewards.mathcheck import _math_equal_cached, math_equal
from rftcli.rewards.text import completion_text, extract_answer


def chat(content):
    return [{"role": "assistant", "content": content}]


A = "<answer>{}</answer>".format
ABC = ["London", "Paris", "Rome"]

# (completion, answer, answer_type, choices, expected accuracy)
ACCURACY_CASES = [
    # numbers
    (A("42"), "42", "number", None, 1.0),
    (A("42.0"), "42", "number", None, 1.0),
    (A("1,000"), "1000", "number", None, 1.0),
    (A("1000"), "1,000", "number", None, 1.0),
    (A("1,234,567.5"), "1234567.5", "number", None, 1.0),
    (A("1{,}000"), "1000", "number", None, 1.0),
    (A("3 cm"), "3", "number", None, 1.0),
    (A("3"), "3 cm", "number", None, 1.0),
    (A("3\\text{ cm}"), "3", "number", None, 1.0),
    (A("5 km/h"), "5", "number", None, 1.0),
    (A("x = 3"), "3", "number", None, 1.0),
    (A("x=3"), "3", "number", None, 1.0),
    (A("50%"), "50", "number", None, 1.0),
    (A("50\\%"), "50", "number", None, 1.0),
    (A("50%"), "0.5", "number", None, 1.0),
    (A("0.5"), "50%", "number", None, 1.0),
    (A("50 percent"), "0.5", "number", None, 1.0),
    (A("50"), "0.5", "number", None, 0.0),
    (A("0.5%"), "50%", "number", None, 0.0),
    (A("1/2"), "0.5", "number", None, 1.0),
    (A("0.5"), "1/2", "number", None, 1.0),
    (A("\\frac12"), "0.5", "number", None, 1.0),
    (A("\\frac{1}{2}"), "0.5", "number", None, 1.0),
    (A("\\dfrac{3}{4}"), "0.75", "number", None, 1.0),
    (A("-\\frac{3}{4}"), "-0.75", "number", None, 1.0),
    (A("3.0001"), "3", "number", None, 0.0),
    (A("3.00001"), "3", "number", None, 0.0),
    (A("3.000001"), "3", "number", None, 1.0),  # within REL_TOL = 1e-6
    (A("4"), "3", "number", None, 0.0),
    (A("-3"), "3", "number", None, 0.0),
    (A("3 or 4"), "4", "number", None, 0.0),
    (A("3 apples and 4 pears"), "4", "number", None, 0.0),
    (A("x = 2 or x = 3"), "3", "number", None, 0.0),
    (A("y = 2x + 3"), "3", "number", None, 0.0),
    (A("The answer is 7."), "7", "number", None, 1.0),
    (A("$12$"), "12", "number", None, 1.0),
    (A("\\$12"), "12", "number", None, 1.0),
    (A("90^\\circ"), "90", "number", None, 1.0),
    (A("1.5 \\times 10^{3}"), "1500", "number", None, 1.0),
    (A("1e-3"), "0.001", "number", None, 1.0),
    (A("0"), "0", "number", None, 1.0),
    (A("1/0"), "0", "number", None, 0.0),
    (A("\\sqrt{4}"), "2", "number", None, 1.0),
    (A("three"), "3", "number", None, 0.0),
    (A("7"), "7", None, None, 1.0),
    (A("8"), "7", None, None, 0.0),
    # extraction: fallbacks, think blocks, empty and repeated tags
    ("The result is \\boxed{12}.", "12", "number", None, 1.0),
    ("so \\boxed{\\frac{1}{2}}", "0.5", "math", None, 1.0),
    ("\\boxed{3} no wait \\boxed{4}", "4", "number", None, 1.0),
    ("I count 5 squares, so there are 6.", "6", "number", None, 1.0),
    ("<think>The answer is 5</think>", "5", "number", None, 0.0),
    ("<think>I think 5</think> I am not sure", "5", "number", None, 0.0),
    ("<think>\\boxed{5}</think> no idea", "5", "number", None, 0.0),
    ("<think>5</think><answer>5</answer>", "5", "number", None, 1.0),
    ("<think>5</think><answer>6</answer>", "5", "number", None, 0.0),
    ("<answer></answer> 5", "5", "number", None, 0.0),
    (A("   "), "5", "number", None, 0.0),
    (A("3") + " wait " + A("5"), "5", "number", None, 1.0),
    (A("5") + " wait " + A("3"), "5", "number", None, 0.0),
    ("<think>so <answer>5</answer></think><answer>3</answer>", "5", "number", None, 0.0),
    ("<think>truncated reasoning, maybe 5", "5", "number", None, 0.0),
    ("reasoning 5 </think><answer>7</answer>", "7", "number", None, 1.0),
    ("reasoning 7 </think> so 5", "7", "number", None, 0.0),
    ("", "5", "number", None, 0.0),
    # multiple choice
    (A("B"), "B", "choice", None, 1.0),
    (A("(B)"), "B", "choice", None, 1.0),
    (A("B."), "B", "choice", None, 1.0),
    (A("B)"), "B", "choice", None, 1.0),
    (A("b"), "B", "choice", None, 1.0),
    (A("the answer is B"), "B", "choice", None, 1.0),
    (A("The answer is (B)."), "B", "choice", None, 1.0),
    (A("Answer: B"), "B", "choice", None, 1.0),
    (A("**B**"), "B", "choice", None, 1.0),
    (A("B. Paris"), "B", "choice", None, 1.0),
    (A("\\boxed{B}"), "B", "choice", None, 1.0),
    (A("(B)"), "(B)", "choice", None, 1.0),
    (A("C"), "B", "choice", None, 0.0),
    (A("B or C"), "B", "choice", None, 0.0),
    (A("Paris"), "B", "choice", ABC, 1.0),
    (A("paris."), "B", "choice", ABC, 1.0),
    (A("Rome"), "B", "choice", ABC, 0.0),
    (A("B"), "Paris", "choice", ABC, 1.0),
    (A("paris"), "B", "choice", ["A. London", "B. Paris"], 1.0),
    (A("(B)"), "B", None, None, 1.0),
    (A("A"), "B", None, None, 0.0),
    (A("Paris"), "B", None, ABC, 1.0),
    # free text
    (A("Paris"), "paris", "text", None, 1.0),
    (A(" New  York. "), "new york", "text", None, 1.0),
    (A("new-york"), "New York", "text", None, 1.0),
    (A("U.S.A."), "USA", "text", None, 1.0),
    (A("London"), "Paris", "text", None, 0.0),
    (A("The answer is Paris."), "Paris", "text", None, 1.0),
    (A("Paris, France"), "Paris", "text", None, 0.0),
    (A("yes"), "Yes", None, None, 1.0),
    (A("no"), "yes", None, None, 0.0),
    # math
    (A("\\frac12"), "0.5", "math", None, 1.0),
    (A("0.5"), "\\frac{1}{2}", "math", None, 1.0),
    (A("\\frac{\\sqrt{2}}{2}"), "\\frac{1}{\\sqrt{2}}", "math", None, 1.0),
    (A("2x+1"), "1+2x", "math", None, 1.0),
    (A("(x+1)^2"), "x^2+2x+1", "math", None, 1.0),
    (A("\\pi"), "\\pi", "math", None, 1.0),
    (A("2\\pi"), "\\pi", "math", None, 0.0),
    (A("3.0001"), "3", "math", None, 0.0),
    (A("\\frac{1}{3}"), "\\frac{1}{2}", "math", None, 0.0),
    (A("x = 2"), "2", "math", None, 1.0),
    (A("3 or 4"), "4", "math", None, 0.0),
    (A("[1, 2)"), "[1,2)", "math", None, 1.0),
    (A("\\{1, 2\\}"), "\\{2, 1\\}", "math", None, 1.0),
    (A("\\frac{1}{2}"), "\\frac{1}{2}", None, None, 1.0),
    (A("\\sqrt{8}"), "2\\sqrt{2}", None, None, 1.0),
    # bounding boxes
    (A("[10, 10, 50, 50]"), "[10, 10, 50, 50]", "box", None, 1.0),
    (A("[12, 11, 50, 52]"), "[10, 10, 50, 50]", "box", None, 1.0),
    (A("[60, 60, 90, 90]"), "[10, 10, 50, 50]", "box", None, 0.0),
    (A("[10, 10, 50, 50] or [0, 0, 5, 5]"), "[10, 10, 50, 50]", "box", None, 0.0),
    (A("[10, 10, 50, 50]"), "[10, 10, 50, 50]", None, None, 1.0),
    # conversational completions
    (chat(A("7")), "7", "number", None, 1.0),
    (chat(A("8")), "7", "number", None, 0.0),
    (chat([{"type": "text", "text": "<think>hm</think>"}, {"type": "text", "text": A("7")}]), "7", "number", None, 1.0),
    (chat([{"type": "image"}, {"type": "text", "text": A("(B)")}]), "B", "choice", None, 1.0),
    (chat("<think>7</think> unsure"), "7", "number", None, 0.0),
]


@pytest.mark.parametrize("completion,answer,answer_type,choices,expected", ACCURACY_CASES)
def test_accuracy(completion, answer, answer_type, choices, expected):
    got = accuracy([completion], answer=[answer], answer_type=[answer_type], choices=[choices])
    assert got == [expected]


def test_accuracy_case_count():
    assert len(ACCURACY_CASES) >= 80


def test_accuracy_batch_ignores_extra_columns_and_missing_type_column():
    completions = [A("1,000"), A("B"), chat(A("\\frac12"))]
    got = accuracy(completions, answer=["1000", "C", "0.5"], prompts=[[], [], []], completion_ids=[[1], [2], [3]],
                   trainer_state=object(), task=["t"] * 3)
    assert got == [1.0, 0.0, 1.0]


def test_accuracy_abstains_without_ground_truth():
    assert accuracy([A("1"), A("1")], answer=[None, ""]) == [None, None]


def test_accuracy_rejects_unknown_type_and_ragged_columns():
    with pytest.raises(ValueError, match="unknown answer_type 'date'"):
        accuracy([A("1")], answer=["1"], answer_type=["date"])
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        accuracy([A("1"), A("2")], answer=["1"])


@pytest.mark.parametrize("answer,choices,expected", [
    ("42", None, "number"), ("1,000", None, "number"), ("50%", None, "number"), ("B", None, "choice"),
    ("(C)", None, "choice"), ("Paris", ["Paris", "Rome"], "choice"), ("\\frac{1}{2}", None, "number"),
    ("\\sqrt{2}", None, "math"), ("2x+1", None, "math"), ("[1, 2, 3, 4]", None, "box"), ("Paris", None, "text"),
    ("a", None, "text"),
])
def test_infer_answer_type(answer, choices, expected):
    assert infer_answer_type(answer, choices) == expected


@pytest.mark.parametrize("text,fallback,expected", [
    ("<answer> 4 </answer>", True, "4"),
    ("<answer>1</answer><answer>2</answer>", True, "2"),
    ("<answer>\n multi\nline \n</answer>", True, "multi\nline"),
    ("<answer></answer>", True, None),
    ("<answer></answer> 5", True, None),
    ("<think>4</think>", True, None),
    ("<think><answer>4</answer></think>", True, None),
    ("x \\boxed{\\frac{1}{2}} y", True, "\\frac{1}{2}"),
    ("\\boxed{a} \\boxed{b}", True, "b"),
    ("\\boxed{ok} \\boxed{unclosed", True, "ok"),
    ("count 1,000 then 2,500.", True, "2,500"),
    ("it is -3.5.", True, "-3.5"),
    ("ratio 1/2", True, "1/2"),
    ("share 50%", True, "50%"),
    ("no numbers here", True, None),
    ("<think>7</think> maybe 8", True, "8"),
    ("\\boxed{3}", False, None),
    ("the answer is 3", False, None),
    ("<answer>3</answer>", False, "3"),
    ("<answer>trunc", True, None),
])
def test_extract_answer(text, fallback, expected):
    assert extract_answer(text, fallback=fallback) == expected


@pytest.mark.parametrize("completion,expected", [
    ("plain", "plain"),
    (None, ""),
    ({"role": "assistant", "content": "one"}, "one"),
    ([{"role": "assistant", "content": "a"}], "a"),
    ([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text",
                                                                                            "text": "b"}]}], "ab"),
    ([{"role": "assistant", "content": None}], ""),
    ([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"}, {"role": "assistant", "content": "b"}],
     "a\nb"),
])
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


@pytest.mark.parametrize("text,strict,lenient", [
    ("<think>r</think><answer>a</answer>", 1.0, 1.0),
    ("<think>r</think>\n\n<answer>a</answer>", 1.0, 1.0),
    ("  <think>multi\nline</think>\n<answer>4</answer>\n", 1.0, 1.0),
    ("<think> </think><answer>a</answer>", 0.0, 1.0),
    ("<think>r</think><answer></answer>", 0.0, 1.0),
    ("<think>r</think>text<answer>a</answer>", 0.0, 1.0),
    ("intro <think>r</think><answer>a</answer>", 0.0, 1.0),
    ("<think>r</think><answer>a</answer> trailing", 0.0, 1.0),
    ("<think>r</think><answer>a</answer><answer>b</answer>", 0.0, 1.0),
    ("<think>r</think><think>s</think><answer>a</answer>", 0.0, 1.0),
    ("<think>r <answer>x</answer></think><answer>a</answer>", 0.0, 1.0),
    ("<answer>a</answer><think>r</think>", 0.0, 0.0),
    ("<answer>a</answer>", 0.0, 0.0),
    ("<think>r</think>", 0.0, 0.0),
    ("r</think><answer>a</answer>", 0.0, 0.0),
    ("<think>r</think><answer>a", 0.0, 0.0),
    ("", 0.0, 0.0),
])
def test_format(text, strict, lenient):
    assert format_strict([text]) == [strict]
    assert format_lenient([text]) == [lenient]
    assert format_strict([chat(text)], prompts=[[]]) == [strict]


def test_format_is_fast():
    rows = ["<think>" + "step " * 200 + "</think>\n<answer>42</answer>"] * 20_000
    start = time.perf_counter()
    assert sum(format_strict(rows)) == len(rows)
    assert sum(format_lenient(rows)) == len(rows)
    assert 2 * len(rows) / (time.perf_counter() - start) > 20_000  # measured ~10x this; loose for slow CI


# Pathological LaTeX: sympy would run for minutes (or forever) on each.
PATHOLOGICAL = [
    "\\frac{" * 500 + "1" + "}" * 500,
    "\\frac{" * 500,
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9}}}",
    "(10^{9})!",
    "\\binom{10^{9}}{10^{8}}",
    "x" * 5000,
]


@pytest.mark.parametrize("expr", PATHOLOGICAL)
@pytest.mark.parametrize("side", ["prediction", "ground_truth"])
def test_pathological_latex_returns_quickly(expr, side):
    _math_equal_cached.cache_clear()
    handler = signal.getsignal(signal.SIGALRM)
    pred, gold = (expr, "1") if side == "prediction" else ("1", expr)
    start = time.perf_counter()
    assert accuracy([A(pred)], answer=[gold], answer_type=["math"]) == [0.0]
    assert time.perf_counter() - start < 5.0
    assert signal.getsignal(signal.SIGALRM) is handler  # the alarm handler is put back


def test_math_check_outside_main_thread_uses_killable_helper():
    _math_equal_cached.cache_clear()
    results = {}

    def work():
        results["warm"] = math_equal("\\frac12", "0.5")  # starts the helper process
        start = time.perf_counter()
        results["tower"] = math_equal("10^{10^{10^{10}}}", "1")
        results["tower_s"] = time.perf_counter() - start
        results["after"] = math_equal("2x+1", "1+2x")  # the helper was restarted

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert results.pop("tower_s") < 5.0
    assert results == {"warm": True, "tower": False, "after": True}


def test_builtin_names():
    rewards = builtin_rewards()
    assert sorted(rewards) == ["accuracy", "format", "format_lenient", "format_strict"]
    assert rewards["format"] is format_strict and rewards["accuracy"] is accuracy
    assert get_reward("format_lenient") is format_lenient
    rewards.clear()  # a copy
    assert get_reward("accuracy") is accuracy


def test_get_reward_by_module_and_file(tmp_path, monkeypatch):
    assert get_reward("rftcli.rewards.format:format_lenient") is format_lenient
    assert get_reward("rftcli.rewards.accuracy:accuracy") is accuracy
    src = tmp_path / "my_rewards.py"
    src.write_text("def short(completions, **kw):\n    return [1.0 if len(c) < 5 else 0.0 for c in completions]\n")
    fn = get_reward(f"{src}:short")
    assert fn(["abc", "abcdefgh"], answer=["x", "y"]) == [1.0, 0.0]
    monkeypatch.chdir(tmp_path)
    assert get_reward("my_rewards.py:short") is fn  # same file, same module
    assert reward_name(f"{src}:short") == "short"


@pytest.mark.parametrize("spec,message", [
    ("acuracy", "unknown reward 'acuracy'; built-in rewards are accuracy, format, format_lenient, format_strict"),
    ("no_such_pkg_xyz.mod:fn", "cannot import 'no_such_pkg_xyz.mod'"),
    ("rftcli.rewards.format:nope", "has no attribute 'nope'"),
    ("rftcli.rewards.format:_TAGS", "'_TAGS' is not callable"),
    ("missing_file.py:fn", "no file"),
])
def test_get_reward_errors(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        get_reward(spec)
    assert "\n" not in str(info.value)


def test_parse_weighted():
    assert parse_weighted(["accuracy=1", "format=0.2", "accuracy", " format_lenient = -0.5 ", "pkg.mod:fn=2e-1"]) == [
        ("accuracy", 1.0), ("format", 0.2), ("accuracy", 1.0), ("format_lenient", -0.5), ("pkg.mod:fn", 0.2)]


@pytest.mark.parametrize("spec,message", [
    ("format=abc", "weight 'abc' is not a number"),
    ("format=", "weight '' is not a number"),
    ("format=nan", "weight must be finite"),
    ("=1", "has no name"),
    ("", "has no name"),
])
def test_parse_weighted_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_weighted([spec])


@pytest.mark.parametrize("spec,name", [
    ("accuracy", "accuracy"), ("format", "format"), ("pkg.module:my_reward", "my_reward"),
    ("path/to/file.py:fn", "fn"), ("pkg.mod:fn-x", "fn_x"),
])
def test_reward_name(spec, name):
    assert reward_name(spec) == name
