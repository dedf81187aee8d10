"""The training record checkpoints carry (rows trained on, by content hash), its inheritance along
base -> SFT -> GRPO -> merged, and eval's count of evaluated rows a model trained on."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from rftcli.contamination import lineage_of, row_hash, table_hashes
from rftcli.manifest import read_checkpoint_manifest
from rftcli.schema import read_table

from .conftest import TINY


def _split_hashes(dataset, split: str) -> set[bytes]:
    table = read_table(dataset, "dataset").table
    return {h for h, s in zip(table_hashes(table), table["split"].to_pylist(), strict=True) if s == split}


def test_row_hash_is_content_not_id():
    img = {"bytes": b"\x89PNG fake", "path": None}
    a = row_hash({"prompt": "How many?", "answer": "3", "images": [img]})
    assert a == row_hash({"prompt": "How many?", "answer": "3", "images": [{"bytes": img["bytes"], "path": "x.png"}]})
    assert len({a, row_hash({"prompt": "How many?", "answer": "4", "images": [img]}),
                row_hash({"prompt": "How many?", "answer": "3", "images": []}),
                row_hash({"prompt": "How many", "answer": "3", "images": [img]})}) == 4


def test_sft_records_the_rows_it_trained_on(dataset, sft_adapter):
    manifest = read_checkpoint_manifest(sft_adapter)
    record = manifest["training_data"]
    train = _split_hashes(dataset, "train")
    assert lineage_of(str(sft_adapter)).hashes == train and record["rows"] == len(train)
    (run,) = record["runs"]
    assert (run["stage"], run["split"], run["dataset"]) == ("sft-coldstart", "train", str(dataset))
    assert run["dataset_hash"] == manifest["inputs"]["dataset"]["hash"]
    assert not lineage_of(TINY).recorded and not lineage_of(TINY).hashes


def test_eval_counts_trained_rows_and_accuracy_on_unseen_ones(tmp_path, dataset, sft_adapter):
    from rftcli.cli import app

    # A scorer whose answer is known: right on train rows, wrong on the others. The SFT adapter trained on
    # every train row, so on split "all" it saw exactly the train rows, and the unseen ones score 0.
    scorer = tmp_path / "known.py"
    scorer.write_text("def train_only(completions, split, **kw):\n"
                      "    return [1.0 if s == 'train' else 0.0 for s in split]\n")
    splits = pq.read_table(dataset, columns=["split"])["split"].to_pylist()
    n_train, n = splits.count("train"), len(splits)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "-d", str(dataset), "--split", "all", "-m", TINY, "--label", "base",
                                      "-m", str(sft_adapter), "--label", "sft", "--scorer", f"{scorer}:train_only",
                                      "--max-new-tokens", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    models = json.loads((out / "summary.json").read_text())["models"]
    sft, base = models["sft"], models["base"]
    assert sft["contamination"] == {"recorded": True, "trained_rows": n_train, "unseen_rows": n - n_train,
                                    "accuracy_unseen": 0.0}
    assert sft["accuracy"] == n_train / n
    assert base["contamination"] == {"recorded": False, "trained_rows": 0, "unseen_rows": n,
                                     "accuracy_unseen": n_train / n}
    text = " ".join(result.output.split())
    assert f"evaluated rows seen in training: base 0 (no record), sft {n_train}" in text
    assert (f"warning: sft (or a model it was trained from) trained on {n_train} of the {n} evaluated rows; "
            f"accuracy {n_train / n:.3f} overall, accuracy on the {n - n_train} unseen: 0.000") in text
    assert "warning: base" not in text

    # the default split, test, is disjoint from train by content: nothing seen, no warning
    clean = CliRunner().invoke(app, ["eval", "-d", str(dataset), "-m", str(sft_adapter), "--label", "sft",
                                     "--max-new-tokens", "2", "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0, clean.output
    assert "evaluated rows seen in training: sft 0" in " ".join(clean.output.split()) and "warning" not in clean.output


def test_the_record_is_inherited_through_grpo_and_merge(tmp_path, dataset, sft_adapter):
    from rftcli.stages import merge, train_grpo

    grpo = tmp_path / "grpo"
    # GRPO on the test split (a user asking for it): its record holds the SFT's train rows and these
    train_grpo.run(train_grpo.Config(dataset=dataset, model=str(sft_adapter), out=grpo, split="test",
                                     rewards=("format",), num_generations=4, max_completion_length=4, batch_size=4,
                                     max_steps=1, limit=4))
    test_rows = read_table(dataset, "dataset").table.filter(
        pq.read_table(dataset, columns=["split"])["split"].to_numpy(zero_copy_only=False) == "test").slice(0, 4)
    expected = _split_hashes(dataset, "train") | set(table_hashes(test_rows))
    assert lineage_of(str(grpo)).hashes == expected
    assert [r["stage"] for r in read_checkpoint_manifest(grpo)["training_data"]["runs"]] == ["sft-coldstart", "train-grpo"]
    merged = tmp_path / "merged"
    merge.run(merge.Config(adapter=grpo, out=merged))
    record = read_checkpoint_manifest(merged)["training_data"]
    assert lineage_of(str(merged)).hashes == expected and record["rows"] == len(expected)
