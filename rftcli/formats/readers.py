"""Containers: stream raw records out of files and folders, one `Record` at a time.

    .jsonl / .ndjson     one JSON object per line; a malformed line is one bad record
    .json                an array of objects, or an object holding one under some key (CLEVR's
                         "questions"); decoded item by item, never loaded whole. A syntax error stops
                         the run even with --skip-bad: after it, where the next item starts is unknown.
                         An object of objects ({id: record}, MathVista's testmini.json) is read whole;
                         each key becomes the record's id unless it has one.
    .csv / .tsv          a header row; cells of list-valued columns (images, choices, bbox ...) may hold JSON
    .parquet             a file, or a folder of them (a Hub snapshot such as MathVista's data/*.parquet)
    save_to_disk folder  `datasets` Dataset (state.json + Arrow files) or DatasetDict (dataset_dict.json);
                         each row's split goes to metadata as `source_split`; DatasetDict splits are read
                         train first, then validation, then test
    image folder         images plus a labels file: metadata.jsonl/.csv/.parquet (the `datasets` ImageFolder
                         convention, `file_name` column) or labels.jsonl/.csv/.tsv; `file_name` becomes the
                         image and `label` the answer
    InterGPS folder      Geometry3K as published: <split>/<id>/data.json + img_diagram.png

Each file's name may state a split (`rftcli.formats.source_split`); folders of files are read train
first, then val, then test, so a later split's repeat of a training row is the one reported.

Locations count lines from 1 (as editors do) and Parquet/Arrow rows from 0 (as pandas does).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Input, Record, Where, source_split, split_name

_JSON_CELLS = {"images", "choices", "bbox", "box", "solution", "metadata", "conversations", "sentences", "file_names"}
NESTED_TOO_DEEPLY = "JSON nested too deeply (lists or objects inside each other past Python's recursion limit)"
_LABEL_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet", "labels.jsonl", "labels.csv", "labels.tsv")
_BATCH_ROWS = 64  # rows turned into Python objects at a time (rows may hold images)


def open_input(path: Path) -> Input:
    """Pick the reader for `path` (a file by its suffix, a folder by what it holds)."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return Input("jsonl", read_jsonl(path))
    if suffix == ".json":
        stream = JsonItems(path)
        key = stream.start()
        return Input("json", stream.records(), extra={"array_key": key})
    if suffix in (".csv", ".tsv"):
        return Input("csv", read_csv(path))
    if suffix == ".parquet":
        return Input("parquet", read_parquet([path], path.parent))
    raise ValueError(f"{path}: unsupported input {suffix!r}; use .jsonl, .json, .csv, .tsv, .parquet or a folder "
                     "(datasets save_to_disk, images with a labels file, Geometry3K)")


def _open_folder(path: Path) -> Input:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return Input("hf-disk", read_hf_disk(path))
    for name in _LABEL_FILES:
        if (path / name).is_file():
            return Input("imagefolder", read_imagefolder(path, path / name))
    problems = intergps_problems(path)
    if problems:
        return Input("intergps", read_intergps(path, problems), layout_hint="geometry3k")
    parquet = sorted(path.rglob("*.parquet"), key=lambda p: (_split_order(source_split(p)), p))
    if parquet:
        return Input("parquet", read_parquet(parquet, path))
    raise ValueError(f"{path}: a folder prepare-data cannot read: expected a datasets save_to_disk folder "
                     f"(state.json or dataset_dict.json), images with a labels file ({', '.join(_LABEL_FILES)}), "
                     "the Geometry3K folder (<id>/data.json), or .parquet files")


def _split_order(name: str | None) -> int:
    """Reading order of a split: train, val, test, then names that are none of them."""
    try:
        return ("train", "val", "test").index(split_name(name)) if name is not None else 0
    except ValueError:
        return 3


# ---------------------------------------------------------------- text

def _not_utf8(where: Where, err: UnicodeDecodeError) -> BadRow:
    return BadRow(where, f"not valid UTF-8 text (byte 0x{err.object[err.start]:02x} at character {err.start + 1}); "
                         "save the file as UTF-8")


def _utf8_lines(path: Path, fh) -> Iterator[str]:
    """The lines of a binary file as text; a line that is not UTF-8 stops the file with its line number
    (the csv module cannot step over one)."""
    for lineno, raw in enumerate(fh, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(Where(str(path), f"line {lineno}"), err) from None


# ---------------------------------------------------------------- JSONL

def read_jsonl(path: Path, base_dir: Path | None = None) -> Iterator[Record]:
    base_dir = base_dir or path.parent
    split = source_split(path)
    index = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = Where(str(path), f"line {lineno}")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Record(index, where, None, base_dir, error=_not_utf8(where, err), raw_text=repr(raw[:200]))
                index += 1
                continue
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                bad = BadRow(Where(str(path), f"line {lineno}, column {err.colno}"), f"malformed JSON ({err.msg})")
                yield Record(index, where, None, base_dir, error=bad, raw_text=line.rstrip("\n"))
            except RecursionError:  # [[[[... 100,000 deep: Python's decoder gives up
                yield Record(index, where, None, base_dir, error=BadRow(where, NESTED_TOO_DEEPLY), raw_text=line[:2000])
            else:
                if isinstance(data, dict):
                    yield Record(index, where, data, base_dir, split=split)
                else:
                    yield Record(index, where, None, base_dir, error=BadRow(where, "expected a JSON object"),
                                 raw_text=line.rstrip("\n"))
            index += 1


# ---------------------------------------------------------------- JSON, streamed

class JsonItems:
    """The items of a JSON array, decoded one at a time from a file read in chunks.

    The array is the whole document, or the first array-valued key of a top-level object; keys before
    it (CLEVR's "info") are decoded and kept in `header`. One item may be at most `max_item` characters.
    """

    chunk = 1 << 20
    max_item = 256 << 20

    def __init__(self, path: Path):
        self.path = path
        self.buf, self.pos, self.offset, self.eof = "", 0, 0, False
        self.line, self.line_start, self.counted = 1, 0, 0  # newline bookkeeping in absolute offsets
        self.header: dict[str, Any] = {}
        self.key: str | None = None
        self.mapping = False
        self._decoder = json.JSONDecoder()
        self._fh = None

    # -- buffer
    def _count_to(self, absolute: int) -> None:
        seg = self.buf[self.counted - self.offset:absolute - self.offset]
        n = seg.count("\n")
        if n:
            self.line += n
            self.line_start = self.counted + seg.rfind("\n") + 1
        self.counted = max(self.counted, absolute)

    def _fill(self) -> bool:
        if self.eof:
            return False
        raw = self._fh.read(self.chunk)
        try:
            text = self._utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as err:
            line = self._newlines + raw[:err.start].count(b"\n") + 1
            raise _not_utf8(Where(str(self.path), f"line {line}"), err) from None
        self._newlines += raw.count(b"\n")
        if not raw:
            self.eof = True
            return False
        self._count_to(self.offset + self.pos)
        self.buf = self.buf[self.pos:] + text
        self.offset += self.pos
        self.pos = 0
        return True

    def _skip_ws(self) -> bool:
        while True:
            n = len(self.buf)
            while self.pos < n and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < n:
                return True
            if not self._fill():
                return False

    def _where(self, absolute: int) -> tuple[int, int]:
        self._count_to(absolute)
        return self.line, absolute - self.line_start + 1

    def _syntax(self, absolute: int, what: str) -> ValueError:
        line, col = self._where(absolute)
        return ValueError(f"{self.path}: line {line}, column {col}: malformed JSON ({what}); a JSON file cannot be "
                          "read past a syntax error, even with --skip-bad")

    def _decode(self) -> Any:
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                truncated = err.pos >= len(self.buf) or err.msg.startswith("Unterminated string")
                if truncated and len(self.buf) - self.pos < self.max_item and self._fill():
                    continue
                raise self._syntax(self.offset + err.pos, err.msg) from None
            except RecursionError:
                raise self._syntax(self.offset + self.pos, NESTED_TOO_DEEPLY) from None
            if end == len(self.buf) and self._fill():  # a number may go on in the next chunk
                continue
            self.pos = end
            return value

    def _expect(self, chars: str) -> str:
        if not self._skip_ws():
            raise self._syntax(self.offset + self.pos, "unexpected end of file")
        c = self.buf[self.pos]
        if c not in chars:
            raise self._syntax(self.offset + self.pos, f"expected {' or '.join(repr(x) for x in chars)}")
        self.pos += 1
        return c

    # -- document
    def start(self) -> str | None:
        """Read up to the array's first item; returns the key holding the array (None: top level)."""
        self._fh = open(self.path, "rb")
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._newlines = 0  # in the bytes read so far, to name the line of a byte that is not UTF-8
        if not self._skip_ws():
            raise ValueError(f"{self.path}: empty JSON file")
        if self._expect("[{") == "[":
            return None
        while True:
            if self._expect('"}') == "}":
                break
            self.pos -= 1
            key = self._decode()
            self._expect(":")
            if not self._skip_ws():
                raise self._syntax(self.offset + self.pos, "unexpected end of file")
            if self.buf[self.pos] == "[":
                self.pos += 1
                self.key = key
                return key
            self.header[key] = self._decode()
            if self._expect(",}") == "}":
                break
        if self.header and all(isinstance(v, dict) for v in self.header.values()):
            self.mapping = True  # {id: record, ...} (MathVista's testmini.json): read whole, as it was
            return None
        raise ValueError(f"{self.path}: a JSON object without an array of records; expected a list of objects, "
                         "an object holding one (like CLEVR's \"questions\"), or an object of objects")

    def records(self) -> Iterator[Record]:
        split = source_split(self.path)
        if self.mapping:
            self._fh.close()
            for index, (key, item) in enumerate(self.header.items()):
                yield Record(index, Where(str(self.path), f"key {key!r}"), {"id": key, **item}, self.path.parent,
                             split=split)
            return
        try:
            index = 0
            if not self._skip_ws():
                raise self._syntax(self.offset + self.pos, "unexpected end of file")
            if self.buf[self.pos] == "]":
                return
            while True:
                self._skip_ws()
                line, _ = self._where(self.offset + self.pos)
                where = Where(str(self.path), f"item {index} (line {line})")
                item = self._decode()
                if isinstance(item, dict):
                    yield Record(index, where, item, self.path.parent, split=split)
                else:
                    yield Record(index, where, None, self.path.parent, error=BadRow(where, "expected a JSON object"),
                                 raw_text=json.dumps(item)[:2000])
                index += 1
                if self._expect(",]") == "]":
                    return
        finally:
            self._fh.close()


# ---------------------------------------------------------------- CSV

def _cell(name: str, value: str | None, where: Where) -> Any:
    if value is None or value == "":
        return None
    if name in _JSON_CELLS and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise BadRow(where, f"cell is not valid JSON ({err.msg})", column=name) from None
        except RecursionError:
            raise BadRow(where, f"cell is not valid JSON ({NESTED_TOO_DEEPLY})", column=name) from None
    return value


def read_csv(path: Path, base_dir: Path | None = None) -> Iterator[Record]:
    base_dir = base_dir or path.parent
    split = source_split(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, "rb") as fh:
        reader = csv.DictReader(_utf8_lines(path, fh), delimiter=delimiter)
        if reader.fieldnames is None:
            return
        last_line = reader.line_num
        index = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                where = Where(str(path), f"line {reader.line_num}")
                yield Record(index, where, None, base_dir, error=BadRow(where, f"malformed CSV ({err})"))
                last_line, index = reader.line_num, index + 1
                continue
            where = Where(str(path), f"line {last_line + 1}")
            last_line = reader.line_num
            if None in row:  # more cells than header names
                yield Record(index, where, None, base_dir,
                             error=BadRow(where, f"{len(reader.fieldnames) + len(row[None])} cells for "
                                                f"{len(reader.fieldnames)} columns"), raw_text=json.dumps(row[None]))
            else:
                try:
                    data = {k: _cell(k, v, where) for k, v in row.items()}
                except BadRow as bad:
                    yield Record(index, where, None, base_dir, error=bad, raw_text=json.dumps(row))
                else:
                    yield Record(index, where, data, base_dir, split=split)
            index += 1


# ---------------------------------------------------------------- Parquet and Arrow

def read_parquet(files: list[Path], base_dir: Path, index: int = 0) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        row, split = 0, source_split(path)
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
                for data in batch.to_pylist():
                    yield Record(index, Where(str(path), f"row {row}"), data, base_dir, split=split)
                    row, index = row + 1, index + 1
        except (OSError, pa.ArrowException) as err:  # truncated or corrupt: the whole file, not one row
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path}: not a readable Parquet file ({reason})") from None


def _arrow_files(folder: Path) -> list[Path]:
    state = json.loads((folder / "state.json").read_text())
    return [folder / f["filename"] for f in state.get("_data_files", [])]


def read_hf_disk(folder: Path) -> Iterator[Record]:
    """Rows of a `datasets.save_to_disk` folder; Arrow streams are memory-mapped and read in batches."""
    import pyarrow as pa

    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        parts = [(split, folder / split) for split in sorted(splits, key=_split_order)]
    else:
        parts = [(None, folder)]
    index = 0
    for split, part in parts:
        row = 0
        for arrow in _arrow_files(part):
            with pa.memory_map(str(arrow)) as source:
                for batch in pa.ipc.open_stream(source):
                    for start in range(0, batch.num_rows, _BATCH_ROWS):
                        for data in batch.slice(start, _BATCH_ROWS).to_pylist():
                            if split is not None:
                                data.setdefault("source_split", split)
                            where = Where(str(folder), f"{split} row {row}" if split else f"row {row}")
                            yield Record(index, where, data, folder, split=split)
                            row, index = row + 1, index + 1


# ---------------------------------------------------------------- image folder

_FILE_KEYS = ("file_name", "filename", "file", "image_path", "path")
_LABEL_KEYS = ("label", "labels", "class", "category")


def read_imagefolder(folder: Path, labels: Path) -> Iterator[Record]:
    """Images named in a labels file: `file_name` (or filename/file/image_path/path, or a list in
    `file_names`) becomes `images`, `label` (or class/category) the answer when there is no `answer`."""
    suffix = labels.suffix.lower()
    inner = (read_jsonl(labels, folder) if suffix == ".jsonl" else read_csv(labels, folder) if suffix in (".csv", ".tsv")
             else read_parquet([labels], folder))
    for rec in inner:
        if rec.data is not None:
            data = dict(rec.data)
            if "images" not in data and "image" not in data:
                names = data.pop("file_names", None)
                if names is None:
                    key = next((k for k in _FILE_KEYS if data.get(k)), None)
                    names = data.pop(key) if key else None
                if names is not None:
                    data["images"] = names
            if "answer" not in data:
                key = next((k for k in _LABEL_KEYS if data.get(k) is not None), None)
                if key:
                    data["answer"] = data.pop(key)
            rec.data = data
        yield rec


# ---------------------------------------------------------------- InterGPS Geometry3K folder

def _numeric_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def intergps_problems(folder: Path) -> list[tuple[str | None, Path]]:
    """(split, problem folder) pairs of a Geometry3K folder as InterGPS publishes it: <id>/data.json with
    img_diagram.png, directly or under train/val/test. Empty when `folder` is not one."""
    out: list[tuple[str | None, Path]] = []
    direct = [p for p in _numeric_dirs(folder) if (p / "data.json").is_file()]
    if direct:
        return [(None, p) for p in direct]
    for split in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.isdigit()),
                        key=lambda p: (_split_order(p.name), p.name)):
        out += [(split.name, p) for p in _numeric_dirs(split) if (p / "data.json").is_file()]
    return out


def read_intergps(folder: Path, problems: list[tuple[str | None, Path]]) -> Iterator[Record]:
    for index, (split, problem) in enumerate(problems):
        path = problem / "data.json"
        where = Where(str(path))
        try:
            raw = path.read_bytes()
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            yield Record(index, where, None, folder, error=_not_utf8(Where(str(path), f"line {line}"), err))
            continue
        except json.JSONDecodeError as err:
            bad = BadRow(Where(str(path), f"line {err.lineno}, column {err.colno}"), f"malformed JSON ({err.msg})")
            yield Record(index, where, None, folder, error=bad)
            continue
        except RecursionError:
            yield Record(index, where, None, folder, error=BadRow(where, NESTED_TOO_DEEPLY))
            continue
        if not isinstance(data, dict):
            yield Record(index, where, None, folder, error=BadRow(where, "expected a JSON object"))
            continue
        data.setdefault("images", [str((problem / "img_diagram.png").relative_to(folder))])
        if split is not None:
            data.setdefault("source_split", split)
        yield Record(index, where, data, folder, split=split)
