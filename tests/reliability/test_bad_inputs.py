"""Bad input to every stage, generated with hypothesis: damaged images, Parquet files cut short or with
flipped bytes, wrong schema versions, missing columns, wrong types, empty tables, text that is not
UTF-8, NaN and infinite numbers, nulls where a value is required, enormous images, and raw files for
prepare-data with the same faults.

Every case must end the same way: exit code 2, one `error:` line that names the file (and the row and
column where there is one), no traceback, the input's bytes unchanged, and nothing written where the
output would go. The model is a real folder: a stage that got past its input checks would load it and
run, so a fault that slips through fails the test by exiting 0 (or by taking far longer).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from rftcli.cli import app
from rftcli.schema import KINDS

runner = CliRunner()
EXAMPLES = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# The stages that read a table, with the kind they read and fast settings (used only if a fault slips through).
STAGES: dict[str, tuple[str, Callable[[str, str, str], list[str]]]] = {
    "rollout": ("dataset", lambda i, m, o: ["rollout", "-d", i, "-m", m, "--out", o + ".parquet", "--split", "all",
                                            "-n", "2", "--max-new-tokens", "2"]),
    "sft-coldstart": ("dataset", lambda i, m, o: ["sft-coldstart", "-d", i, "-m", m, "--out", o, "--split", "all",
                                                  "--max-steps", "1"]),
    "sft-coldstart-from-scores": ("scores", lambda i, m, o: ["sft-coldstart", "-d", i, "-m", m, "--out", o,
                                                             "--split", "all", "--max-steps", "1"]),
    "train-grpo": ("dataset", lambda i, m, o: ["train-grpo", "-d", i, "-m", m, "-r", "accuracy", "--out", o,
                                               "--split", "all", "--max-steps", "1", "--num-generations", "2",
                                               "--max-completion-length", "2"]),
    "train-grpo-offline": ("scores", lambda i, m, o: ["train-grpo", "--rollouts", i, "-m", m, "--out", o,
                                                      "--split", "all", "--max-steps", "1"]),
    "score": ("rollouts", lambda i, m, o: ["score", "--rollouts", i, "-r", "accuracy", "--out", o + ".parquet"]),
    "eval": ("dataset", lambda i, m, o: ["eval", "-d", i, "-m", m, "--out", o, "--split", "all",
                                         "--max-new-tokens", "2"]),
}


@pytest.fixture(scope="module")
def tables(dataset, rollouts, tmp_path_factory) -> dict[str, pa.Table]:
    """A valid table of each kind the stages read, metadata included."""
    scores = tmp_path_factory.mktemp("bad_inputs") / "scores.parquet"
    result = runner.invoke(app, ["score", "--rollouts", str(rollouts), "-r", "accuracy", "-r", "format=0.2",
                                 "--out", str(scores), "--workers", "1"])
    assert result.exit_code == 0, result.output
    # Every completion ended (none cut at the token limit): sft-coldstart trains on each row, so each row's images
    # are checked (a stage checks the images of the rows it uses only).
    scored = pq.read_table(scores)
    scored = _set(scored, "finish_reason", ["stop"] * scored.num_rows).replace_schema_metadata(scored.schema.metadata)
    return {"dataset": pq.read_table(dataset), "rollouts": pq.read_table(rollouts), "scores": scored}


def refused(args_for: Callable[[str, str, str], list[str]], model: Path, write: Callable[[Path], None],
            *expected: str) -> str:
    """Write a bad input with `write`, run the stage on it, and check the refusal; returns the error line."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bad = folder / "bad.parquet"
        write(bad)
        digest = hashlib.sha256(bad.read_bytes()).hexdigest()
        result = runner.invoke(app, args_for(str(bad), str(model), str(folder / "out")))
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, result.output[-3000:]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output[-3000:]
        assert "Traceback" not in result.output
        line = lines[0]
        assert str(bad) in line, line
        for fragment in expected:
            assert fragment in line, f"{fragment!r} not in {line!r}"
        assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest, "the input was modified"
        assert sorted(p.name for p in folder.iterdir()) == ["bad.parquet"], "something was written"
        return line


def _writer(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


def _set(table: pa.Table, name: str, values: list, type_: pa.DataType | None = None) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(table.column_names.index(name), field.with_type(type_ or field.type),
                            pa.array(values, type_ or field.type))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (its header alone; no pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (seed % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


STAGE_IDS = sorted(STAGES)
# `score` never decodes images: it carries them to its output unchanged, and the stage that uses them
# (sft-coldstart, train-grpo) refuses a damaged one.
IMAGE_STAGE_IDS = [s for s in STAGE_IDS if s != "score"]


def _required_columns(kind: str) -> list[str]:
    return [f.name for f in KINDS[kind] if not f.nullable]


# ---------------------------------------------------------------- images


def _jpeg(row: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_png(row))).convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png_with_idat(png: bytes, data: bytes) -> bytes:
    """`png` with its pixel data (IDAT) replaced by `data` under a correct chunk checksum."""
    import struct
    import zlib

    at = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[at:at + 4])[0]
    chunk = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return png[:at] + chunk + png[at + 12 + length:]


@pytest.mark.parametrize("stage", IMAGE_STAGE_IDS)
@EXAMPLES
@given(data=st.data())
def test_a_damaged_image_is_named_by_row(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    good = _png(row)
    damage = data.draw(st.one_of(
        st.binary(max_size=64).map(lambda b: ("random bytes", b)),
        st.integers(9, len(good) - 13).map(lambda n: ("cut short", good[:n])),
        # Past the signature and before IEND, whose checksum Pillow's verify() does not read.
        st.integers(16, len(good) - 13).map(lambda n: ("flipped byte", good[:n] + bytes([good[n] ^ 0xFF]) + good[n + 1:])),
        # Headers and checksums intact, pixel data that does not decode: only decoding the image finds these.
        st.floats(0.3, 0.9).map(lambda f: ("jpeg cut short", _jpeg(row)[: int(len(_jpeg(row)) * f)])),
        st.just(("pixel data not zlib", _png_with_idat(good, b"not zlib data at all"))),
    ), label="damage")[1]
    images = table.column("images").to_pylist()
    images[row] = [{"bytes": damage, "path": None}]
    refused(args, tiny_model_dir, _writer(_set(table, "images", images)), f"row {row}, column 'images'")



@pytest.mark.parametrize("stage", IMAGE_STAGE_IDS)
def test_pixel_data_that_does_not_decode_is_named_by_row_before_the_model_loads(stage, tables, tiny_model_dir):
    """A PNG whose chunks and checksums are intact but whose pixel data is not zlib passes Pillow's verify();
    sft-coldstart and train-grpo met it mid-run as an internal error (exit 1)."""
    kind, args = STAGES[stage]
    table = tables[kind]
    images = table.column("images").to_pylist()
    images[2] = [{"bytes": _png_with_idat(_png(2), b"not zlib data at all"), "path": None}]
    line = refused(args, tiny_model_dir, _writer(_set(table, "images", images)), "row 2, column 'images'")
    assert "not a readable image" in line


@pytest.mark.parametrize("stage", ["rollout", "sft-coldstart"])
def test_an_image_the_processor_would_refuse_for_its_shape_is_named_by_row(stage, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    buf = io.BytesIO()
    Image.new("RGB", (400, 1), (200, 10, 10)).save(buf, format="PNG")
    images = table.column("images").to_pylist()
    images[1] = [{"bytes": buf.getvalue(), "path": None}]
    refused(args, tiny_model_dir, _writer(_set(table, "images", images)), "row 1, column 'images'",
            "400x1, more than 200 times longer than wide")

@pytest.mark.parametrize("stage", IMAGE_STAGE_IDS)
@settings(EXAMPLES, max_examples=2)
@given(data=st.data())
def test_an_enormous_image_is_refused_before_decoding(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    width = data.draw(st.integers(9_500, 60_000), label="width")
    height = data.draw(st.integers(89_478_486 // width + 1, 60_000), label="height")
    images = table.column("images").to_pylist()
    images[row] = [{"bytes": png_header(width, height), "path": None}]
    refused(args, tiny_model_dir, _writer(_set(table, "images", images)), f"row {row}, column 'images'",
            "decompression-bomb limit")


@pytest.mark.parametrize("stage", IMAGE_STAGE_IDS)
def test_an_image_without_bytes_is_not_opened_from_its_path(stage, tables, tiny_model_dir, tmp_path):
    kind, args = STAGES[stage]
    table = tables[kind]
    images = table.column("images").to_pylist()
    images[1] = [{"bytes": None, "path": "/etc/passwd"}]
    refused(args, tiny_model_dir, _writer(_set(table, "images", images)), "row 1, column 'images'", "no image bytes")


# ---------------------------------------------------------------- the file itself

@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(fraction=st.floats(0.0, 0.995))
def test_a_file_cut_short_is_refused(stage, fraction, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    buf = pa.BufferOutputStream()
    pq.write_table(tables[kind], buf)
    data = buf.getvalue().to_pybytes()
    refused(args, tiny_model_dir, lambda p: p.write_bytes(data[: int(len(data) * fraction)]),
            "not a readable Parquet file")


def _with_checksums(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, write_page_checksum=True, compression="zstd")  # as rftcli writes its tables
    return buf.getvalue().to_pybytes()


@pytest.mark.parametrize("kind", ["dataset", "rollouts", "scores"])
@settings(EXAMPLES, max_examples=40)
@given(data=st.data())
def test_a_flipped_byte_anywhere_is_an_error_or_changes_nothing(kind, data, tables, tmp_path_factory):
    """rftcli writes page checksums: a flipped byte in a stored page is an error naming the file, and one in
    a place no row comes from (a statistic, metadata no reader uses) leaves every row as it was. What is
    never allowed: rows that differ from the ones written, or an error that is not one line."""
    from rftcli.schema import ArtifactError, read_table

    raw = bytearray(_with_checksums(tables[kind]))
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    path = tmp_path_factory.mktemp("flip") / "bad.parquet"
    path.write_bytes(bytes(raw))
    try:
        read = read_table(path, kind, check_images=True).table
    except ArtifactError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err), str(err)
    else:
        assert read.equals(read_table(_written(tables[kind], path.with_name("good.parquet")), kind).table)


def _written(table: pa.Table, path: Path) -> Path:
    path.write_bytes(_with_checksums(table))
    return path


@pytest.mark.parametrize("stage", ["score", "rollout"])
@EXAMPLES
@given(data=st.data())
def test_a_flipped_byte_in_a_stored_page_stops_the_stage(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    raw = bytearray(_with_checksums(tables[kind]))
    meta = pq.read_metadata(pa.BufferReader(bytes(raw)))
    column = meta.row_group(0).column(data.draw(st.integers(0, meta.num_columns - 1), label="column"))
    # The last byte of the column chunk: page data (compressed values), which the page checksum covers.
    at = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size - 1
    raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    line = refused(args, tiny_model_dir, lambda p: p.write_bytes(bytes(raw)))
    assert "damaged" in line, line


# ---------------------------------------------------------------- the schema

@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(tag=st.one_of(st.sampled_from(["dataset/0", "dataset/2", "rollouts/99", "scores/1.0", "eval/1", "rejects/1",
                                      "", "dataset", "/1"]),
                     st.text(st.characters(codec="utf-8"), max_size=20)))
def test_a_wrong_schema_tag_is_refused(stage, tag, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    if tag in (f"{kind}/1", "scores/1" if kind == "rollouts" else "", "rollouts/1" if kind == "scores" else ""):
        return  # a valid tag (a scores table is also a rollouts table for score)
    meta = {**table.schema.metadata, b"rftcli.schema": tag.encode()}
    line = refused(args, tiny_model_dir, _writer(table.replace_schema_metadata(meta)))
    assert any(w in line for w in ("schema version", "table, expected", "not an rftcli", "unknown rftcli.schema tag")), line


@pytest.mark.parametrize("stage", STAGE_IDS)
def test_a_file_of_another_program_is_refused(stage, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    refused(args, tiny_model_dir, _writer(tables[kind].replace_schema_metadata(None)), "no rftcli.schema metadata")


@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(data=st.data())
def test_a_missing_column_is_named(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    column = data.draw(st.sampled_from(_required_columns(kind)), label="column")
    table = tables[kind]
    refused(args, tiny_model_dir, _writer(table.drop_columns([column])), f"column {column!r} is missing")


# Types no column of the schema can be cast from (a bool casts to text, so it is no wrong type for one).
_WRONG_TYPES = [pa.struct([pa.field("x", pa.int64())]), pa.list_(pa.list_(pa.int64()))]


@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(data=st.data())
def test_a_column_of_the_wrong_type_is_named(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    column = data.draw(st.sampled_from(_required_columns(kind)), label="column")
    wrong = data.draw(st.sampled_from(_WRONG_TYPES), label="type")
    values = pa.array([{"x": 1} if pa.types.is_struct(wrong) else [[1]]] * table.num_rows, wrong)
    bad = table.set_column(table.column_names.index(column), pa.field(column, wrong), values)
    refused(args, tiny_model_dir, _writer(bad), f"column {column!r}: expected")


@pytest.mark.parametrize("stage", STAGE_IDS)
def test_an_empty_table_is_refused(stage, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    refused(args, tiny_model_dir, _writer(tables[kind].slice(0, 0)), "no rows")


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(data=st.data())
def test_a_missing_required_value_is_named(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    column = data.draw(st.sampled_from(_required_columns(kind)), label="column")
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    values = table.column(column).to_pylist()
    values[row] = None
    refused(args, tiny_model_dir, _writer(_set(table, column, values)), f"row {row}, column {column!r}: missing value")


def _not_utf8(valid: str, bad: bytes, at: int) -> bytes:
    raw = valid.encode()
    at = min(at, len(raw))
    return raw[:at] + bad + raw[at:]


@pytest.mark.parametrize("stage", STAGE_IDS)
@EXAMPLES
@given(data=st.data())
def test_text_that_is_not_utf8_is_named(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    strings = [f.name for f in KINDS[kind] if f.type == pa.string() and not f.nullable]
    column = data.draw(st.sampled_from(strings), label="column")
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    bad = data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
                    label="bytes")
    values = [v.encode() for v in table.column(column).to_pylist()]
    values[row] = _not_utf8(table.column(column)[row].as_py(), bad, data.draw(st.integers(0, 8), label="at"))
    # Parquet stores text as bytes; a hostile file can hold any: build the column without pyarrow's check.
    offsets = pa.array([0, *__import__("itertools").accumulate(len(v) for v in values)], pa.int32())
    column_array = pa.Array.from_buffers(pa.string(), len(values), [None, offsets.buffers()[1],
                                                                    pa.py_buffer(b"".join(values))])
    bad_table = table.set_column(table.column_names.index(column), table.schema.field(column), column_array)
    refused(args, tiny_model_dir, _writer(bad_table), f"row {row}, column {column!r}: text is not valid UTF-8")


_FLOAT_COLUMNS = {"rollouts": ["logprobs", "temperature", "top_p"], "scores": ["reward", "reward_accuracy", "logprobs"]}


@pytest.mark.parametrize("stage", [s for s in STAGE_IDS if STAGES[s][0] != "dataset"])
@EXAMPLES
@given(data=st.data())
def test_nan_and_infinite_numbers_are_named(stage, data, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    column = data.draw(st.sampled_from(_FLOAT_COLUMNS[kind]), label="column")
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="value")
    values = table.column(column).to_pylist()
    if isinstance(values[row], list):
        values[row] = [*values[row][:-1], value]
    else:
        values[row] = value
    refused(args, tiny_model_dir, _writer(_set(table, column, values)),
            f"row {row}, column {column!r}: not a finite number")


# ---------------------------------------------------------------- --debug

def test_debug_shows_the_traceback_of_the_same_refusal(tables, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(tables["dataset"].slice(0, 0), bad)
    result = runner.invoke(app, ["--debug", "rollout", "-d", str(bad), "-m", str(tiny_model_dir), "--out",
                                 str(tmp_path / "o.parquet")])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "no rows" in str(result.exception)


# ---------------------------------------------------------------- prepare-data's raw inputs

GOOD_ROW = {"prompt": "How many squares?", "answer": "3"}


def prepare_refused(tmp_path: Path, name: str, content: bytes, *expected: str,
                    files: dict[str, bytes] | None = None) -> str:
    src = tmp_path / name
    src.write_bytes(content)
    for other, data in (files or {}).items():
        (tmp_path / other).write_bytes(data)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["prepare-data", "--input", str(src), "--out", str(tmp_path / "out.parquet")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for fragment in (str(src), *expected):
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    return lines[0]


@EXAMPLES
@given(data=st.data())
def test_prepare_data_non_utf8_line_is_named(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    fmt = data.draw(st.sampled_from(["jsonl", "csv"]), label="format")
    rows = data.draw(st.integers(1, 5), label="good rows before")
    bad = data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82"]), label="bytes")
    if fmt == "jsonl":
        good = b"".join(json.dumps(GOOD_ROW).encode() + b"\n" for _ in range(rows))
        content = good + b'{"prompt": "x' + bad + b'", "answer": "1"}\n'
        expected = f"line {rows + 1}"
    else:
        content = b"prompt,answer\n" + b"".join(b"How many?,3\n" for _ in range(rows)) + b"x" + bad + b",1\n"
        expected = "UTF-8"
    prepare_refused(folder, f"in.{fmt}", content, expected)


@EXAMPLES
@given(data=st.data())
def test_prepare_data_damaged_or_enormous_image_file_is_named(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    good = _png(7)
    kind = data.draw(st.sampled_from(["random", "cut", "enormous"]), label="fault")
    if kind == "random":
        image = data.draw(st.binary(max_size=48), label="bytes")
    elif kind == "cut":
        image = good[: data.draw(st.integers(0, len(good) - 13), label="cut")]
    else:
        image = png_header(data.draw(st.integers(20_000, 60_000), label="w"), 20_000)
    rows = [{**GOOD_ROW, "image": "ok.png"}, {**GOOD_ROW, "image": "bad.png"}]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    prepare_refused(folder, "in.jsonl", content, "line 2", "column 'images'", files={"ok.png": good, "bad.png": image})


@EXAMPLES
@given(value=st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2), st.booleans()))
def test_prepare_data_field_of_the_wrong_type_is_named(value, tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    content = (json.dumps(GOOD_ROW) + "\n" + json.dumps({"prompt": value, "answer": "1"}) + "\n").encode()
    prepare_refused(folder, "in.jsonl", content, "line 2", "column 'prompt'")


@pytest.mark.parametrize("name,content", [("in.jsonl", b""), ("in.json", b"[]"), ("in.csv", b"prompt,answer\n")])
def test_prepare_data_empty_input_is_refused(name, content, tmp_path):
    prepare_refused(tmp_path, name, content, "no rows")


# ---------------------------------------------------------------- values a type cannot rule out

OFFLINE = "train-grpo-offline"


def _offline_refused(table: pa.Table, tiny_model_dir: Path, *expected: str) -> str:
    return refused(STAGES[OFFLINE][1], tiny_model_dir, _writer(table), *expected)


def test_a_group_holding_two_prompts_is_refused_offline(tables, tiny_model_dir):
    """Advantages are computed within a group: one that mixes prompts would train on wrong advantages."""
    table = tables["scores"]
    groups = table.column("group_index").to_pylist()
    other = next(i for i, g in enumerate(groups) if g != groups[0])
    groups[other] = groups[0]
    _offline_refused(_set(table, "group_index", groups), tiny_model_dir, f"row {other}, column 'group_index'",
                     "a group is the samples of one prompt")


def test_a_sample_given_twice_in_a_group_is_refused_offline(tables, tiny_model_dir):
    table = tables["scores"]
    samples = table.column("sample_index").to_pylist()
    samples[1] = samples[0]
    _offline_refused(_set(table, "sample_index", samples), tiny_model_dir, "row 1, column 'sample_index'",
                     "appears twice")


def test_greedy_rollouts_are_refused_offline(tables, tiny_model_dir):
    table = tables["scores"]
    _offline_refused(_set(table, "temperature", [0.0] * table.num_rows), tiny_model_dir, "temperature 0")


def test_a_token_id_outside_the_vocabulary_is_refused_offline(tables, tiny_model_dir):
    table = tables["scores"]
    ids = table.column("completion_ids").to_pylist()
    ids[4] = [*ids[4][:-1], 10_000_000]
    _offline_refused(_set(table, "completion_ids", ids), tiny_model_dir, "row 4, column 'completion_ids'",
                     "token id 10000000 is outside the model's vocabulary")


@pytest.mark.parametrize("stage", ["score", OFFLINE])
@pytest.mark.parametrize("column,value,message", [
    ("completion_ids", None, "missing item in the list"),
    ("completion_ids", -5, "negative token id"),
    ("logprobs", None, "missing item in the list"),
    ("logprobs", 0.5, "log-probability above 0"),
])
def test_token_ids_and_log_probs_are_checked_item_by_item(stage, column, value, message, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    values = table.column(column).to_pylist()
    values[3] = [*values[3][:-1], value]
    refused(args, tiny_model_dir, _writer(_set(table, column, values)), f"row 3, column {column!r}: {message}")


@pytest.mark.parametrize("stage", [s for s in STAGE_IDS if STAGES[s][0] == "dataset"])
def test_a_repeated_dataset_id_is_refused(stage, tables, tiny_model_dir):
    """Ids name rows: rollout seeds derive from them, so two prompts under one id got the same samples."""
    kind, args = STAGES[stage]
    table = tables[kind]
    ids = table.column("id").to_pylist()
    ids[3] = ids[1]
    refused(args, tiny_model_dir, _writer(_set(table, "id", ids)), "row 3, column 'id'", "repeats the id of row 1")


@pytest.mark.parametrize("stage", ["rollout", "score"])
def test_numbers_where_text_belongs_are_refused_not_cast(stage, tables, tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    bad = table.set_column(table.column_names.index("prompt"), pa.field("prompt", pa.int64()),
                           pa.array(range(table.num_rows), pa.int64()))
    refused(args, tiny_model_dir, _writer(bad), "column 'prompt': expected string, found int64")


def _with_manifest(table: pa.Table, manifest: bytes) -> pa.Table:
    from rftcli.schema import MANIFEST_KEY

    return table.replace_schema_metadata({**table.schema.metadata, MANIFEST_KEY: manifest})


def test_a_manifest_changed_after_writing_is_refused(tables, tiny_model_dir):
    """Parquet's page checksums do not cover the footer, where offline GRPO finds its reward weights: a
    flipped byte there changed a weight from 1.0 to 0.0 and trained on."""
    from rftcli.schema import MANIFEST_KEY

    table = tables["scores"]
    manifest = table.schema.metadata[MANIFEST_KEY]
    flipped = manifest.replace(b'"weight": 1.0', b'"weight": 0.0', 1)
    assert flipped != manifest
    _offline_refused(_with_manifest(table, flipped), tiny_model_dir, "footer is damaged")


@pytest.mark.parametrize("manifest,message", [(b"[]", "not a JSON object"), (b"null", "not a JSON object"),
                                              (b"\xff\xfe", "not valid JSON"), (b"[" * 100_000, "not valid JSON")])
def test_a_manifest_that_is_not_a_json_object_is_refused(manifest, message, tables, tiny_model_dir):
    from rftcli.schema import CHECK_KEY

    table = tables["scores"]
    meta = {k: v for k, v in _with_manifest(table, manifest).schema.metadata.items() if k != CHECK_KEY}
    _offline_refused(table.replace_schema_metadata(meta), tiny_model_dir, "rftcli.manifest metadata", message)


def test_a_short_group_is_refused_offline(tables, tiny_model_dir):
    """Rows dropped from one group after rollout (5 of its 8 samples kept, say): its advantages would be
    computed over another population than the others'."""
    table = tables["scores"]
    groups = table.column("group_index").to_pylist()
    drop = groups.index(groups[-1])  # the first row of the last group
    kept = table.filter(pa.array([i != drop for i in range(table.num_rows)]))
    _offline_refused(kept, tiny_model_dir, f"row {drop}, column 'group_index'", "samples where the others have")


@pytest.mark.parametrize("stage", ["rollout", "score"])
@pytest.mark.parametrize("column,value,message", [
    ("answer_type", "banana", "'banana' is not one of number, choice, text, math, box"),
    ("metadata", "not json", "not a JSON object"),
    ("metadata", "[1, 2]", "not a JSON object"),
    ("metadata", "[" * 100_000, "not a JSON object"),
])
def test_text_columns_with_a_vocabulary_or_a_format_are_checked(stage, column, value, message, tables,
                                                                tiny_model_dir):
    kind, args = STAGES[stage]
    table = tables[kind]
    values = table.column(column).to_pylist()
    values[2] = value
    refused(args, tiny_model_dir, _writer(_set(table, column, values)), f"row 2, column {column!r}: {message}")


# ---------------------------------------------------------------- limits: prompts and images over budget

# Every stage but score tokenizes prompts (score carries them unread).
TOKENIZING_STAGE_IDS = [s for s in STAGE_IDS if s != "score"]


def _one_prompt_used(table: pa.Table, row: int, changes: dict[str, object]) -> tuple[pa.Table, int]:
    """`table` with `changes` made in every row of `row`'s prompt (a rollouts or scores table repeats a prompt in
    each sample of its group); those samples also count as finished, so sft-coldstart trains on them. Returns the
    table and the first row of that prompt, the one an error names."""
    ids = table.column("id").to_pylist()
    rows = [i for i, x in enumerate(ids) if x == ids[row]]
    if "finish_reason" in table.column_names:
        changes = {"finish_reason": "stop", **changes}
    for column, value in changes.items():
        values = table.column(column).to_pylist()
        for i in rows:
            values[i] = value
        table = _set(table, column, values)
    return table, rows[0]


@pytest.mark.parametrize("stage", TOKENIZING_STAGE_IDS)
@settings(EXAMPLES, max_examples=2)
@given(data=st.data())
def test_a_prompt_over_the_budget_is_refused_by_row(stage, data, tables, tiny_model_dir):
    """A 5 MB prompt (a pasted document) is refused from its length in characters, never tokenized; a prompt
    over --max-prompt-length from its token count. The test prompts are under 60 tokens with their image."""
    kind, args = STAGES[stage]
    row = data.draw(st.integers(0, tables[kind].num_rows - 1), label="row")
    size = data.draw(st.sampled_from(["5 MB", "2000 tokens"]), label="prompt")
    prompt = ("lorem ipsum dolor " * 300_000)[:5_000_000] if size == "5 MB" else "word " * 2000
    table, first = _one_prompt_used(tables[kind], row, {"prompt": prompt})
    flags = [] if size == "5 MB" else ["--max-prompt-length", "300"]
    line = refused(lambda i, m, o: args(i, m, o) + flags, tiny_model_dir, _writer(table),
                   f"row {first}, column 'prompt'", "prompt budget")
    assert ("5,000,000 characters" if size == "5 MB" else "of 300 tokens") in line


@pytest.mark.parametrize("stage", IMAGE_STAGE_IDS)
def test_an_image_over_the_pixel_budget_is_shrunk_and_counted(stage, tables, tiny_model_dir, tmp_path):
    """A table written by hand or by another tool skips prepare-data's --max-pixels: the stage shrinks its images
    over the budget itself and says how many."""
    kind, args = STAGES[stage]
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 10)).save(buf, format="PNG")
    table, _ = _one_prompt_used(tables[kind], 1, {"images": [{"bytes": buf.getvalue(), "path": None}]})
    src = tmp_path / "big.parquet"
    pq.write_table(table, src)
    result = runner.invoke(app, args(str(src), str(tiny_model_dir), str(tmp_path / "out")) + ["--max-pixels", "4000"])
    assert result.exit_code == 0, result.output[-3000:]
    assert re.search(r"images shrunk[^0-9\n]*(\d+)", result.output).group(1) == "1", result.output


# ---------------------------------------------------------------- prepare-data: links that loop, deep nesting

@settings(EXAMPLES, max_examples=4)
@given(shape=st.sampled_from(["itself", "two links", "three links", "a folder on the way"]), row=st.integers(1, 3))
def test_prepare_data_image_link_that_loops_is_named(shape, row, tmp_path_factory):
    """Path.resolve() raised RuntimeError on such a link: an internal error, exit 1."""
    folder = tmp_path_factory.mktemp("loop")
    (folder / "images").mkdir()
    (folder / "images" / "ok.png").write_bytes(_png(1))
    names = {"itself": ["a"], "two links": ["a", "b"], "three links": ["a", "b", "c"], "a folder on the way": ["a"]}[shape]
    for name, target in zip(names, names[1:] + names[:1], strict=True):
        (folder / "images" / name).symlink_to(target)
    bad = "images/a/ok.png" if shape == "a folder on the way" else "images/a"
    lines = [{**GOOD_ROW, "image": "images/ok.png"}] * (row - 1) + [{**GOOD_ROW, "image": bad}]
    src = folder / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = sorted(str(p) for p in folder.rglob("*"))
    result = runner.invoke(app, ["prepare-data", "--input", str(src), "--out", str(folder / "out.parquet")])
    out = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(out) == 1 and "Traceback" not in result.output, result.output
    for fragment in (f"{src}: line {row}", "column 'images'", "a symbolic link that loops back on itself"):
        assert fragment in out[0], out[0]
    assert sorted(str(p) for p in folder.rglob("*")) == before


@EXAMPLES
@given(depth=st.integers(1_000, 100_000), opener=st.sampled_from(["[", '{"a": ']),
       fmt=st.sampled_from(["jsonl", "json", "csv"]))
def test_prepare_data_json_nested_past_the_recursion_limit_is_named(depth, opener, fmt, tmp_path_factory):
    """[[[[... 100,000 deep made Python's JSON decoder raise RecursionError: an internal error, exit 1."""
    folder = tmp_path_factory.mktemp("deep")
    closer = "]" if opener == "[" else "}"
    deep = opener * depth + "1" + closer * depth
    good = json.dumps(GOOD_ROW)
    if fmt == "jsonl":
        content, expected = f'{good}\n{{"prompt": "x", "answer": "1", "metadata": {deep}}}\n', "line 2"
    elif fmt == "json":  # the file cannot be read past its second item; near the limit, the item itself is named
        content, expected = f'[{good}, {{"prompt": "x", "answer": "1", "metadata": {deep}}}]', "line 1"
    else:
        content, expected = f'prompt,answer,metadata\nx,1,"{deep.replace(chr(34), chr(34) * 2)}"\n', "line 2"
    line = prepare_refused(folder, f"in.{fmt}", content.encode(), expected)
    # Past the limit the parser gives up; near it a value parses and is refused as metadata cannot hold it.
    assert any(w in line for w in ("nested too deeply", "nested more than 100 levels", "not a JSON object")), line


def test_completion_ids_and_logprobs_of_different_lengths_are_refused_offline(tables, tiny_model_dir):
    """score carries both columns unread; the offline trainer pairs them token by token, so it refuses the row."""
    table = tables["scores"]
    logprobs = table.column("logprobs").to_pylist()
    logprobs[4] = logprobs[4][:-1]
    _offline_refused(_set(table, "logprobs", logprobs), tiny_model_dir, "row 4, column 'logprobs'",
                     "completion_ids and logprobs must be")
