"""Stage prepare-data: make the `dataset` table from a built-in synthetic task (`--task counting`) or from
data in the layouts the field publishes (`--input PATH`, `--format auto|rows|llava|mathvista|geometry3k|
clevr|refcoco|scienceqa|aokvqa|chartqa|vqa|mmbench|ai2d|wemath|ocrbench`; `rftcli.formats` documents every container and layout).
Writes the `dataset` table (see `rftcli.schema`).

Splits (`--split-from`; `rftcli.splits`):
    source     the default: a row keeps the split its source gives it (a file named <split>-NNNNN-of-NNNNN,
               CLEVR_<split>_questions.json, MathVista testmini, InterGPS train/val/test folders, a DatasetDict
               split, a `split` column; `rftcli.formats` lists them), mapped onto train, val and test; rows
               without one get a split from a hash of their id (`--test-fraction`, `--val-fraction`), so the
               same row lands in the same split whatever the order, machine or run.
    hash       every row by id hash, whatever its source says; the summary counts source test rows that
               landed in train.
    built-in tasks draw their splits disjoint by content (`rftcli.tasks.disjoint_splits`).
    Cross-split duplicates: rows of a later split (train, then val, then test) whose content hash (prompt,
    image bytes, answer: `rftcli.contamination.content_hash`) equals a row of an earlier split are counted per
    pair of splits in the summary and the manifest (`splits.cross_split_duplicates`);
    `--drop-cross-split-duplicates` removes them from the later split. Rows are written to a scratch file
    first and copied into the output once every split is known, so the manifest holds the counts and a
    dropped row may be one that was read first.

Per input row (`rftcli.formats.build`): columns renamed (`--map src=dst`), the layout's adapter maps the
row, images are decoded once, turned upright (EXIF), RGB, resized within `--max-pixels`/`--min-pixels`
and re-encoded only when changed (`rftcli.images`), the answer is normalised per answer type (the
source's kept as metadata.raw_answer), and the prompt gets its options and instruction.

Choices this stage makes:
    streaming  records are read and rows written in batches (256 rows or 64 MB of images), so memory
               does not grow with the data; what does grow is one 16-byte key per row for deduplication
               and each row's id for the duplicate-id check: a few hundred bytes a row (the bench saw
               +30 MB from 10k to 100k input rows), some hundreds of MB at ten million rows.
    dedupe     an input row whose prompt, answer, answer type, choices, system and image contents (sha256
               of the stored bytes) equal an earlier row's of the same split is dropped and counted
               (`--keep-duplicates` keeps them); a repeat in another split is a cross-split duplicate.
               Rows of a built-in task are never deduplicated: their repeats within a split are
               independent samples.
    shuffle    `--shuffle` reorders rows through a buffer of `--shuffle-buffer` rows (default 10,000):
               memory is the buffer times the average row (images included), and rows move at most about
               a buffer's length. A buffer at least as long as the input is a full shuffle. Splits do not
               depend on order; ids of input rows without one come from their position before shuffling.
    bad rows   a missing or unreadable image, a missing or empty prompt or answer, an answer that does not
               fit its type, a malformed line: by default the run stops with file, line or row, and column,
               and writes nothing. `--skip-bad` writes the good rows and one `rejects` row per bad one
               (source, location, column, reason, raw JSON) to `--rejects` (default <out>.rejects.parquet).
               With no bad rows no rejects file is written, since `datasets` cannot open a Parquet file
               with zero rows; an old one at that path is removed (with --overwrite).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rftcli.atomic import check_output, output_of
from rftcli.contamination import row_hash, table_hashes
from rftcli.errors import first_line
from rftcli.formats import BadRow, Context, Record, Where
from rftcli.formats.build import RowBuilder, raw_json
from rftcli.formats.prompt import resolve_instruction, resolve_system
from rftcli.formats.registry import FORMATS, resolve_layout
from rftcli.images import PIL_DEFAULT_MAX_PIXELS, ImageProcessor
from rftcli.manifest import make_manifest
from rftcli.schema import TableWriter
from rftcli.splits import SPLITS, assign_split, copy_out, cross_split, row_split, scratch_schema
from rftcli.tasks import TASKS, disjoint_splits

__all__ = ["BadRow", "Config", "Result", "assign_split", "run"]

_BATCH_ROWS = 256
_BATCH_BYTES = 64 << 20
_BOX_FORMATS = ("auto", "xyxy", "xywh")
_BOX_UNITS = ("auto", "pixel", "normalized", "norm1000")
_SPLIT_FROM = ("source", "hash")
T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    out: Path
    """Output dataset Parquet file."""
    task: str | None = None
    """Built-in synthetic task to generate: counting, comparison, arithmetic, grounding."""
    input: Path | None = None
    """File or folder to convert (instead of --task): JSONL, JSON, CSV/TSV, Parquet, a datasets save_to_disk
    folder, an image folder with a labels file, the Geometry3K folder."""
    format: str = "auto"
    """Layout of --input: auto, rows, llava, mathvista, geometry3k, clevr, refcoco, scienceqa, aokvqa, chartqa,
    vqa, mmbench, ai2d, wemath, ocrbench."""
    num: int = 1000
    """Rows to generate for a synthetic task."""
    task_options: tuple[str, ...] = ()
    """Synthetic task knobs as key=value (see `rftcli.tasks`)."""
    map: tuple[str, ...] = ()
    """Column renames for --input, as src=dst (e.g. question=prompt)."""
    system: str | None = None
    """System prompt for rows without one: a name (think) or your text."""
    instruction: str | None = None
    """Instruction added to each prompt: a name (think, answer, boxed, none), your text, or a template
    holding {question}; default think. '' for none."""
    question: str | None = None
    """Prompt for input rows that have none (an image folder whose labels file holds only labels)."""
    image_root: Path | None = None
    """Folder that relative image paths start from (default: the input's folder)."""
    allow_outside_paths: bool = False
    """Let image and video paths in the data leave that folder (`..`, absolute paths); off by default."""
    max_pixels: int | None = None
    """Shrink images above this many pixels (width x height), keeping the aspect ratio."""
    min_pixels: int | None = None
    """Enlarge images below this many pixels, keeping the aspect ratio."""
    max_image_pixels: int = PIL_DEFAULT_MAX_PIXELS
    """Refuse images larger than this before decoding them (decompression-bomb guard)."""
    video_frames: int = 8
    """Frames sampled from each video into the row's images."""
    box_format: str = "auto"
    """Source boxes: xyxy, xywh or auto (the layout's convention)."""
    box_units: str = "auto"
    """Source boxes: pixel, normalized (0-1), norm1000 (0-1000) or auto (normalized when all values <= 1)."""
    dedupe: bool = True
    """Drop input rows whose content repeats an earlier row's (not applied to built-in tasks)."""
    skip_bad: bool = False
    """Write good rows and a rejects table instead of stopping at the first bad row."""
    rejects: Path | None = None
    """Rejects Parquet file for --skip-bad (default: <out>.rejects.parquet)."""
    split_from: str = "source"
    """Where --input rows get their split: source (the source's own split where it has one, else the id hash)
    or hash (the id hash for every row)."""
    drop_cross_split_duplicates: bool = False
    """Drop rows whose content repeats a row of an earlier split (train, then val, then test)."""
    exclude: tuple[Path, ...] = ()
    """Dataset files whose items (prompt, images, answer; any split) must not appear in the output: a built-in
    task draws again, an --input row is dropped and counted. For evaluation sets that training never saw."""
    test_fraction: float = 0.1
    """Share of rows assigned to the test split (by id hash)."""
    val_fraction: float = 0.0
    """Share of rows assigned to the val split (by id hash)."""
    limit: int | None = None
    """Stop after writing this many rows."""
    shuffle: bool = False
    """Shuffle row order through a buffer of --shuffle-buffer rows (seeded by --seed)."""
    shuffle_buffer: int = 10_000
    """Rows held for --shuffle; at least the number of rows for a full shuffle."""
    seed: int = 0
    """Seed for synthetic data and shuffling."""
    overwrite: bool = False
    """Replace existing outputs."""

    def __post_init__(self):
        if (self.task is None) == (self.input is None):
            raise ValueError("give exactly one of --task (synthetic data) or --input (a file to convert)")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; built-in tasks: {', '.join(TASKS)}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; formats: {', '.join(FORMATS)}")
        if self.task is not None and self.format != "auto":
            raise ValueError("--format applies to --input, not to a built-in --task")
        if not 0 <= self.test_fraction + self.val_fraction < 1 or self.test_fraction < 0 or self.val_fraction < 0:
            raise ValueError("test_fraction and val_fraction must be >= 0 and sum to less than 1")
        if self.num < 1:
            raise ValueError("num must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")
        for name in ("max_pixels", "min_pixels", "max_image_pixels", "video_frames", "shuffle_buffer"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_pixels and self.min_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        if self.box_format not in _BOX_FORMATS:
            raise ValueError(f"box_format must be one of {', '.join(_BOX_FORMATS)}")
        if self.split_from not in _SPLIT_FROM:
            raise ValueError(f"split_from must be one of {', '.join(_SPLIT_FROM)}")
        if self.box_units not in _BOX_UNITS:
            raise ValueError(f"box_units must be one of {', '.join(_BOX_UNITS)}")
        for item in self.task_options + self.map:
            if "=" not in item:
                raise ValueError(f"expected key=value, got {item!r}")
        if self.skip_bad and Path(self.rejects_path).resolve() == Path(self.out).resolve():
            raise ValueError("--rejects must differ from --out")

    @property
    def rejects_path(self) -> Path:
        return Path(self.rejects) if self.rejects is not None else Path(self.out).with_suffix(".rejects.parquet")


@dataclass(frozen=True)
class Result:
    path: Path
    rows: int
    splits: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    """Bad rows skipped (--skip-bad)."""
    rejects_path: Path | None = None
    """The rejects table, or None when nothing was rejected (no file is written then)."""
    duplicates: int = 0
    """Rows dropped as repeats of an earlier row."""
    layout: str | None = None
    """Layout used for --input (None for a built-in task)."""
    container: str | None = None
    """Reader used for --input: jsonl, json, csv, parquet, hf-disk, imagefolder, intergps."""
    split_sources: dict[str, int] = field(default_factory=dict)
    """Rows written per origin of their split: source, id hash, task (disjoint by content)."""
    source_test_in_train: int = 0
    """Rows the source puts in test that --split-from hash put in train."""
    cross_split: dict[str, int] = field(default_factory=dict)
    """Rows of a later split repeating an earlier split's content, per pair ("test~train")."""
    cross_split_dropped: int = 0
    """Of those, rows removed (--drop-cross-split-duplicates)."""
    excluded: int = 0
    """--input rows dropped because an --exclude file holds their item (a built-in task draws again instead)."""
    dropped_exchanges: tuple[int, int] = (0, 0)
    """Later questions of multi-exchange conversations left out (llava keeps the first), and the rows they were in."""
    seconds: float = 0.0


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def shuffled(items: Iterable[T], buffer: int, seed: int) -> Iterator[T]:
    """Items in a seeded random order, holding at most `buffer` of them at a time."""
    rng = random.Random(seed)
    held: list[T] = []
    for item in items:
        if len(held) < buffer:
            held.append(item)
            continue
        j = rng.randrange(buffer)
        yield held[j]
        held[j] = item
    rng.shuffle(held)
    yield from held


def excluded_items(paths: tuple[Path, ...]) -> frozenset[bytes]:
    """The content hashes (`row_hash`) of every row of the --exclude dataset files."""
    import pyarrow.parquet as pq

    hashes: set[bytes] = set()
    for path in paths:
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=256, columns=["prompt", "answer", "images"])
            for batch in batches:
                hashes.update(table_hashes(batch))
        except (OSError, ValueError, KeyError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: cannot read it as a dataset for --exclude ({first_line(err)})") from None
    return frozenset(hashes)


def _synthetic(config: Config, excluded: frozenset[bytes] = frozenset()) -> Iterator[dict[str, Any]]:
    knobs = {k: _parse_value(v) for k, v in (item.split("=", 1) for item in config.task_options)}
    if config.instruction is not None:
        knobs["instruction"] = resolve_instruction(config.instruction)
    system = resolve_system(config.system)
    try:
        draws = TASKS[config.task](2**62, config.seed, **knobs)  # an endless stream: repeats are drawn again
        split_of = lambda row_id: assign_split(row_id, config.test_fraction, config.val_fraction)  # noqa: E731
        for row in disjoint_splits(draws, config.num, split_of, excluded=excluded):
            if system and not row.get("system"):
                row["system"] = system
            yield row
    except TypeError as err:
        raise ValueError(f"task {config.task}: bad --task-option ({err})") from None


class _Rejects:
    """The rejects table, opened on the first bad row (so no rows, no file)."""

    def __init__(self, path: Path | None, manifest: dict[str, Any], overwrite: bool, stack: ExitStack):
        self.path, self.manifest, self.overwrite, self.stack = path, manifest, overwrite, stack
        self.writer: TableWriter | None = None
        self.batch: list[dict[str, Any]] = []
        self.count = 0
        self.first: BadRow | None = None

    def add(self, bad: BadRow, record: Record | None) -> None:
        if self.writer is None:
            self.writer = self.stack.enter_context(TableWriter(self.path, "rejects", self.manifest,
                                                               overwrite=self.overwrite))
        raw = None
        if record is not None:
            raw = raw_json(record.data) if record.data is not None else record.raw_text
        self.batch.append({"source": bad.where.source, "location": bad.where.location, "column": bad.column,
                           "reason": bad.reason, "raw": raw})
        self.count += 1
        self.first = self.first or bad
        if len(self.batch) >= _BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None and self.batch:
            self.writer.write_rows(self.batch)
        self.batch = []


def _input_rows(config: Config, info: dict[str, Any]) -> Iterator[tuple[Record | None, Any]]:
    """(record, row-or-BadRow) pairs of --input, shuffled if asked."""
    from rftcli.formats.readers import open_input

    opened = open_input(config.input)
    layout, records = resolve_layout(opened, config.format, str(config.input))
    info.update(layout=layout, container=opened.container)
    ctx = Context(image_root=config.image_root, question=config.question, box_format=config.box_format,
                  box_units=config.box_units, allow_outside_paths=config.allow_outside_paths)
    builder = RowBuilder(layout, ctx, ImageProcessor(config.max_pixels, config.min_pixels, config.max_image_pixels),
                         instruction=resolve_instruction(config.instruction), system=resolve_system(config.system),
                         renames=dict(item.split("=", 1) for item in config.map),
                         id_prefix=config.input.stem if config.input.is_file() else config.input.name,
                         video_frames=config.video_frames)
    if config.shuffle:  # shuffle the raw records: ids and locations stay those of the input order
        records = shuffled(records, config.shuffle_buffer, config.seed)
    for record in records:
        try:
            yield record, builder.build(record)
        except BadRow as bad:
            yield record, bad
        except RecursionError:  # a record nested deeper than Python walks (json.loads took it, a copy did not)
            yield record, BadRow(record.where, "a value nested too deeply (lists or objects inside each other)")


def run(config: Config) -> Result:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.time()
    out = Path(config.out)
    check_output(out, config.overwrite, inputs=[config.input, *config.exclude])
    rejects_path = config.rejects_path if config.skip_bad and config.input is not None else None
    if rejects_path is not None:
        check_output(rejects_path, config.overwrite, inputs=[config.input])
    inputs = {"input": config.input} if config.input else {}
    inputs.update({f"exclude{i}": path for i, path in enumerate(config.exclude)})
    manifest = make_manifest("prepare-data", config, inputs, seed=config.seed)
    excluded = excluded_items(config.exclude)
    excluded_rows = 0
    info: dict[str, Any] = {}
    if config.task is not None:
        rows = ((None, row) for row in _synthetic(config, excluded))
        if config.shuffle:
            rows = shuffled(rows, config.shuffle_buffer, config.seed)
    else:
        rows = _input_rows(config, info)
    seen_ids: set[str] = set()
    seen_keys: set[bytes] = set()
    first_rank: dict[bytes, int] = {}  # content hash -> earliest split (index in SPLITS) holding it
    duplicates = 0
    exchanges = (0, 0)
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    schema = scratch_schema()
    scratch = out.with_name(f".{out.name}.rows.tmp")  # beside the output: it holds every image once more
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            # Uncompressed: the scratch file is read once, right after.
            scratch_writer = stack.enter_context(pq.ParquetWriter(scratch, schema, compression="none"))
            rejects = _Rejects(rejects_path, manifest, config.overwrite, stack)
            written = 0

            def flush() -> None:
                scratch_writer.write_table(pa.Table.from_pylist(batch, schema=schema))

            for record, row in rows:
                if config.limit is not None and len(seen_ids) >= config.limit:
                    break
                if isinstance(row, dict):
                    split = row_split(row, record, config.split_from, config.test_fraction, config.val_fraction)
                    if isinstance(split, BadRow):
                        row = split
                    else:
                        row["split"], row["_origin"] = split
                        split = row["split"]
                        dedupe_key = row.get("_key") and split.encode() + row["_key"]
                        if row["id"] in seen_ids and dedupe_key not in seen_keys:
                            where = record.where if record is not None else Where(str(config.task))
                            row = BadRow(where, f"duplicate id {row['id']!r}", column="id")
                if isinstance(row, BadRow):
                    if rejects_path is None:
                        raise row
                    rejects.add(row, record)
                    continue
                row.pop("_key", None)
                row.pop("_source_split", None)
                if later := row.pop("_dropped_exchanges", 0):
                    exchanges = (exchanges[0] + later, exchanges[1] + 1)
                row_bytes = row.pop("_bytes", 0)
                if config.dedupe and dedupe_key:
                    if dedupe_key in seen_keys:
                        duplicates += 1
                        continue
                    seen_keys.add(dedupe_key)
                if "_content" not in row:  # a built-in task's rows carry theirs
                    row["_content"] = row_hash(row)
                if row["_content"] in excluded:
                    excluded_rows += 1
                    continue
                rank = SPLITS.index(row["split"])
                if first_rank.setdefault(row["_content"], rank) > rank:
                    first_rank[row["_content"]] = rank
                seen_ids.add(row["id"])
                batch.append(row)
                written += 1
                batch_bytes += row_bytes
                if len(batch) >= _BATCH_ROWS or batch_bytes >= _BATCH_BYTES:
                    flush()
                    batch, batch_bytes = [], 0
            if batch:
                flush()
            rejects.flush()
            if written == 0:
                why = f"; all {rejects.count} rows were rejected, the first: {rejects.first}" if rejects.count else ""
                raise ValueError(f"{config.input or config.task}: no rows to write{why}")
            scratch_writer.close()
            # Known only now: the manifest records where splits came from and the duplicates across them.
            keep, manifest["splits"] = cross_split(scratch, first_rank, config.drop_cross_split_duplicates)
            if config.exclude:
                manifest["excluded"] = {"files": [str(p) for p in config.exclude], "items": len(excluded),
                                        "input_rows_dropped": excluded_rows}
            with TableWriter(out, "dataset", manifest, overwrite=config.overwrite) as writer:
                copy_out(scratch, writer, keep)
    except BaseException as err:
        if output_of(err) is None:  # the scratch file's errors (a full disk) are the output's
            err._rftcli_output = out
        raise
    finally:
        scratch.unlink(missing_ok=True)
    if rejects_path is not None and rejects.count == 0 and rejects_path.exists():
        rejects_path.unlink()  # an old run's rejects would describe rows this run did not see
    report = manifest["splits"]
    return Result(path=out, rows=sum(report["rows"].values()), splits=report["rows"], rejected=rejects.count,
                  rejects_path=rejects_path if rejects.count else None, duplicates=duplicates,
                  layout=info.get("layout"), container=info.get("container"), split_sources=report["from"],
                  source_test_in_train=report["source_test_in_train"], cross_split=report["cross_split_duplicates"],
                  cross_split_dropped=report["cross_split_dropped"], excluded=excluded_rows, dropped_exchanges=exchanges,
                  seconds=time.time() - start)


def describe(result: Result) -> list[tuple[str, Any]]:
    """Summary lines for the command line."""
    lines: list[tuple[str, Any]] = [("rows", result.rows)]
    lines += [(f"  {name}", result.splits[name]) for name in SPLITS if name in result.splits]
    lines.append(("splits from", ", ".join(f"{k} {v}" for k, v in result.split_sources.items())))
    if result.source_test_in_train:
        lines.append(("source test rows in train", f"{result.source_test_in_train} (--split-from hash)"))
    pairs = ", ".join(f"{k.replace('~', ' repeats ')} {v}" for k, v in sorted(result.cross_split.items()))
    if result.cross_split_dropped:
        pairs += f" ({result.cross_split_dropped} dropped)"
    lines.append(("cross-split duplicates", pairs or "0"))
    if result.excluded:
        lines.append(("rows in --exclude files", f"{result.excluded} dropped"))
    if result.layout:  # built-in tasks are neither deduplicated nor rejected from
        lines += [("input", f"{result.container}, layout {result.layout}"), ("duplicates dropped", result.duplicates)]
        if result.dropped_exchanges[0]:
            questions, rows = result.dropped_exchanges
            lines.append(("later questions dropped", f"{questions} in {rows} multi-exchange rows (the first is kept)"))
        if result.rejects_path is not None:
            lines += [("rejected", result.rejected), ("rejects file", str(result.rejects_path))]
        else:
            lines.append(("rejected", "0 (no rejects file written)"))
    lines.append(("seconds", round(result.seconds, 1)))
    return lines
