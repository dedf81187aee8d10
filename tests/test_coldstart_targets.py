"""sft-coldstart on rows of questions and answers only (no response, no reasoning): one error line that
names the file and row and says what to do instead (online GRPO from the base model, or targets made by
rollout -> score -> sft-coldstart --min-reward 1); exit 2, nothing written."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rftcli.cli import app

from .conftest import TINY

runner = CliRunner()


def test_rows_without_targets_say_what_to_do(tmp_path):
    rows = [{"id": f"my_vqa-{i:07d}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(24)]
    (tmp_path / "my_vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = tmp_path / "data.parquet"
    done = runner.invoke(app, ["prepare-data", "--input", str(tmp_path / "my_vqa.jsonl"), "--out", str(data)])
    assert done.exit_code == 0, done.output
    out = tmp_path / "sft"
    done = runner.invoke(app, ["sft-coldstart", "-d", str(data), "-m", TINY, "--max-steps", "1", "--out", str(out)])
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}: row "), done.output
    assert "column 'response': neither response nor reasoning to train on" in lines[0]
    assert "rows of split 'train' have none" in lines[0]
    assert f"`rftcli train-grpo -d {data} -m MODEL ...`" in lines[0]
    assert "`rftcli sft-coldstart -d scores.parquet --min-reward 1 -m MODEL ...`" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "my_vqa.jsonl"]
