"""check-rewards: the reward self-test on every published-layout fixture of the prepare-data tests, the
report, the table and the exit codes."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.formats.registry import layouts
from rftcli.schema import read_table
from rftcli.stages import check_rewards
from rftcli.stages import prepare_data as prepare_stage
from tests import test_prepare_data, test_published_layouts

CHECKED = ("accuracy", "count", "iou")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, list[Path]]:
    """Every dataset the prepare-data tests convert from a published layout, by layout: each test that
    takes only `tmp_path` is run with `run` recording a copy of every table it writes."""
    keep = tmp_path_factory.mktemp("converted")
    found: dict[str, list[Path]] = {}

    def recording_run(config, *args, **kwargs):
        result = prepare_stage.run(config, *args, **kwargs)
        if result.layout is None:  # a built-in task, not a published layout
            return result
        copy = keep / f"{len(list(keep.iterdir())):03d}-{result.layout}.parquet"
        shutil.copyfile(result.path, copy)
        found.setdefault(result.layout, []).append(copy)
        return result

    for module in (test_published_layouts, test_prepare_data):
        original = module.run
        module.run = recording_run
        try:
            for name, fn in list(vars(module).items()):
                if name.startswith("test_") and callable(fn) and list(inspect.signature(fn).parameters) == ["tmp_path"]:
                    try:
                        fn(tmp_path_factory.mktemp(name[:40]))
                    except Exception:  # that test reports its own failure; the tables it wrote still count
                        pass
        finally:
            module.run = original
    return found


def test_every_layout_fixture_gets_full_agreement_for_accuracy_count_and_iou(converted, tmp_path):
    assert set(converted) == set(layouts())  # every layout prepare-data reads has a fixture here
    types_seen: set[str] = set()
    for layout, paths in converted.items():
        for path in paths:
            result = check_rewards.run(check_rewards.Config(dataset=path, out=tmp_path / f"{path.stem}.json",
                                                            rewards=CHECKED))
            failures = [(c.answer_type, c.reward, f) for c in result.cells for f in c.failures]
            assert result.passed and not failures, (layout, path.name, failures[:3])
            assert not result.skipped, (layout, path.name, result.skipped)
            types_seen |= {c.answer_type for c in result.cells if c.checks}
            for c in result.cells:
                assert c.agreement == 1.0 or c.checks == 0
    assert types_seen >= {"number", "choice", "text", "box"}


def test_report_is_written_with_its_manifest_and_a_weak_reward_fails_the_command(tmp_path, dataset):
    out = tmp_path / "check.json"
    result = CliRunner().invoke(app, ["check-rewards", "-d", str(dataset), "-r", "accuracy", "-r", "accuracy_strict",
                                      "-r", "count", "--out", str(out)])
    assert result.exit_code == 1, result.output  # accuracy_strict ignores \boxed{}: its right boxed forms fail
    assert "agreement below --min-agreement 1" in result.output
    report = json.loads(out.read_text())
    assert report["passed"] is False and report["manifest"]["stage"] == "check-rewards"
    assert report["manifest"]["inputs"]["dataset"]["hash"]
    cells = {(c["answer_type"], c["reward"]): c for c in report["cells"]}
    assert cells[("number", "accuracy")]["agreement"] == 1.0 and cells[("number", "count")]["agreement"] == 1.0
    strict = cells[("number", "accuracy_strict")]
    assert 0.8 < strict["agreement"] < 1.0
    assert {f["form"] for f in strict["failures"]} == {"boxed"} and strict["failures"][0]["id"].startswith("counting")
    assert "accuracy_s" in result.output and "92" in result.output and "boxed" in result.output

    # Accepted with a lower bar; the existing report is kept without --overwrite.
    again = CliRunner().invoke(app, ["check-rewards", "-d", str(dataset), "-r", "accuracy_strict", "--out", str(out),
                                     "--min-agreement", "0.9"])
    assert again.exit_code == 2 and "already exists" in again.output
    ok = CliRunner().invoke(app, ["check-rewards", "-d", str(dataset), "-r", "accuracy_strict", "--out", str(out),
                                  "--min-agreement", "0.9", "--overwrite"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["passed"] is True


def test_a_reward_that_pays_for_any_number_is_caught(tmp_path, dataset):
    lax = tmp_path / "lax.py"
    lax.write_text("import re\n"
                   "def lax(completions, answer, **kw):\n"
                   "    return [1.0 if a in c else 0.0 for c, a in zip(completions, answer)]\n")
    result = check_rewards.run(check_rewards.Config(dataset=dataset, out=tmp_path / "r.json", rewards=(f"{lax}:lax",)))
    assert not result.passed
    (cell,) = result.cells
    wrong = {f["form"] for f in json.loads((tmp_path / "r.json").read_text())["cells"][0]["failures"]}
    assert cell.agreement < 0.8 and wrong & {"think only", "two slots", "hedge", "in a word", "in a file name"}


def test_bad_settings_and_non_answer_rewards_are_one_line_errors(tmp_path, dataset):
    for args, message in ((["-r", "format"], "format does not"), (["--min-agreement", "2"], "must be in [0, 1]"),
                          (["--split", "nope"], "no rows to check in split 'nope'")):
        result = CliRunner().invoke(app, ["check-rewards", "-d", str(dataset), "--out", str(tmp_path / "x.json"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "x.json").exists()


def test_forms_cover_the_surface_forms_of_each_answer_type():
    def names(row):
        return {f.name: f.right for f in check_rewards.render_forms(row, ["London"])}

    number = names({"answer": "3", "answer_type": "number"})
    assert number["word"] and number["sentence"] and not number["in a word"] and not number["neighbour"]
    choice = names({"answer": "B", "answer_type": "choice", "choices": ["5", "5 \\sqrt { 2 }", "10"]})
    assert choice["option text respaced"] and choice["letter) text"] and not choice["other option text"]
    assert names({"answer": "E", "answer_type": "choice", "choices": ["a", "b"]}) == {}  # no option E
    box = check_rewards.render_forms({"answer": "[10, 10, 50, 50]", "answer_type": "box"})
    assert {f.name for f in box} >= {"list", "json bbox_2d", "shifted a pixel", "IoU 0.1", "corners"}
    far = next(f for f in box if f.name == "IoU 0.1").completion
    from rftcli.rewards.grounding import iou

    assert iou([far], answer=["[10, 10, 50, 50]"]) == [pytest.approx(0.1, abs=1e-3)]


def test_report_rows_match_the_dataset(tmp_path, dataset):
    result = check_rewards.run(check_rewards.Config(dataset=dataset, out=tmp_path / "r.json", split="test"))
    assert result.rows == read_table(dataset, "dataset").table.to_pandas()["split"].eq("test").sum()
    assert result.passed and {c.reward for c in result.cells} == set(CHECKED)
