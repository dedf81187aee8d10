"""From one raw record to one `dataset` row (without its split), the same way for every layout:

    renames (--map)  ->  layout adapter (a draft row)  ->  images: read, checked, upright, RGB, sized,
    encoded; video frames sampled  ->  answer type and normalised answer (boxes converted to pixel xyxy
    of the stored image)  ->  prompt: <image> removed, options listed, instruction; system filled  ->
    id (given, else <input name>-<position>)  ->  content key for deduplication, content hash for the split
    check (`rftcli.contamination.content_hash`), and the source split (a row's own, else its file's).

Every problem with the record raises `BadRow` naming the file, line or row, and column.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from rftcli.contamination import content_hash
from rftcli.formats import BadRow, BoxSpec, Context, Record, Where
from rftcli.formats.prompt import (
    apply_instruction,
    convert_box,
    format_box,
    infer_answer_type,
    normalise_answer,
    render_choices,
    strip_image_tokens,
    unbox,
)
from rftcli.formats.registry import layouts
from rftcli.formats.rows import image_base
from rftcli.images import ImageError, ImageProcessor, StoredImage, sample_frames
from rftcli.schema import ANSWER_TYPES

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def b64_image(text: str) -> bytes | None:
    """Decoded bytes if `text` is base64 of an image file, else None (then it was meant as a path)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_IMAGE_MAGIC) else None


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, links followed, lies in the folder `root`. A link that loops is taken as it stands
    (`Path.resolve` raises RuntimeError on one); reading it is refused later, naming the row."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def local_file(ref: str, base: Path, where: Where, column: str, allow_outside: bool) -> Path:
    """The file a path in the data names, refused when it leaves `base` (unless allowed): a data set
    from elsewhere must not make prepare-data copy ~/.ssh/id_rsa or ../../secrets into a table."""
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    if not allow_outside and not inside(path, base):
        raise BadRow(where, f"path {ref!r} leads outside {base}, the folder image paths start from; pass "
                            "--allow-outside-paths to allow it", column=column)
    return path


def not_a_file(path: Path) -> str | None:
    """What stands at `path` when it exists but is no regular file ("a folder", "a named pipe (FIFO)" ...), else
    None. Told apart from "not found": reading a named pipe would wait for a writer that never comes."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((name for test, name in kinds if test(mode)), None)


def image_bytes(ref: Any, base: Path, where: Where, allow_outside: bool = False) -> tuple[bytes, str | None]:
    """(encoded bytes, path as given or None) of one image reference; a path must stay inside `base`
    unless `allow_outside`."""
    if isinstance(ref, dict):
        if ref.get("bytes"):
            return bytes(ref["bytes"]), ref.get("path")
        ref = ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref), None
    if not isinstance(ref, str) or not ref.strip():
        raise BadRow(where, f"expected an image path or base64 string, got {ref!r}", column="images")
    if ref.startswith("data:"):
        decoded = b64_image(ref.partition(",")[2])
        if decoded is None:
            raise BadRow(where, "data URI is not valid base64 of an image", column="images")
        return decoded, None
    # base64 first: a path holds "." or "/" (not base64) or decodes to no image signature
    if (decoded := b64_image(ref)) is not None:
        return decoded, None
    path = local_file(ref, base, where, "images", allow_outside)
    try:
        if path.is_file():
            return path.read_bytes(), ref
        os.stat(path)  # a link on the way that loops (is_file() says False): ELOOP, reported below
    except FileNotFoundError:
        pass
    except OSError as err:
        reason = "a symbolic link that loops back on itself" if err.errno == errno.ELOOP else err.strerror or err
        raise BadRow(where, f"cannot read image file {path} ({reason})", column="images") from None
    if (kind := not_a_file(path)) is not None:
        raise BadRow(where, f"image {path} is {kind}, not a file", column="images")
    hint = "" if Path(ref).is_absolute() else f" (relative paths start from {base}; --image-root names the image folder)"
    raise BadRow(where, f"image file {path} not found{hint}", column="images")


def raw_json(data: Any, limit: int = 4000) -> str:
    """A record as JSON text for the rejects table: bytes as their length, long text shortened."""
    def shorten(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        if isinstance(v, dict):
            return {str(k): shorten(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [shorten(x) for x in v]
        if isinstance(v, str) and len(v) > 500:
            return v[:500] + f"...<{len(v)} chars>"
        return v
    try:
        text = json.dumps(shorten(data), default=str, ensure_ascii=False)
    except RecursionError:
        return "<nested too deeply to show>"
    return text if len(text) <= limit else text[:limit] + "..."


MAX_NESTING = 100
"""Most levels of lists and objects inside each other a stored metadata value may have."""


def _nesting(value: Any) -> int:
    """Levels of lists/dicts inside each other in `value`, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                stack.extend((x, depth + 1) for x in item)
    return deepest


def _meta_default(v: Any) -> Any:
    return f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else str(v)


class RowBuilder:
    """Converts records of one input to dataset rows (see the module docstring)."""

    def __init__(self, layout: str, ctx: Context, processor: ImageProcessor, *, instruction: str,
                 system: str | None, renames: dict[str, str], id_prefix: str, video_frames: int):
        self.adapter = layouts()[layout]
        self.ctx = ctx
        self.processor = processor
        self.instruction = instruction
        self.system = system
        self.renames = renames
        self.id_prefix = id_prefix
        self.video_frames = video_frames

    def build(self, record: Record) -> dict[str, Any]:
        """The dataset row of `record` plus `_key` (content key for deduplication), `_content` (content hash),
        `_source_split` (the split the source gives the row, as published, or None) and `_bytes`."""
        if record.error is not None:
            raise record.error
        where = record.where
        data = {self.renames.get(k, k): v for k, v in record.data.items()}
        try:
            draft = self.adapter.convert(data, where, record.base_dir, self.ctx)
        except BadRow:
            raise
        except (TypeError, AttributeError, KeyError, ValueError) as err:  # a record of an unexpected shape
            raise BadRow(where, f"cannot convert this record ({type(err).__name__}: {err})") from None
        meta: dict[str, Any] = draft["metadata"]
        base = image_base(record.base_dir, self.ctx)
        images: list[dict[str, Any]] = []
        stored: list[StoredImage] = []
        for ref in draft["images"]:
            data_bytes, path = image_bytes(ref, base, where, self.ctx.allow_outside_paths)
            try:
                img = self.processor.process(data_bytes)
            except ImageError as err:
                raise BadRow(where, str(err), column="images") from None
            images.append({"bytes": img.bytes, "path": path})
            stored.append(img)
        if draft.get("video"):
            self._video(draft["video"], base, where, images, stored, meta)

        raw_answer = draft["answer"]
        choices = draft["choices"]
        given = unbox(raw_answer)
        answer_type = draft["answer_type"] or infer_answer_type(given, choices)
        if answer_type not in ANSWER_TYPES:
            raise BadRow(where, f"{answer_type!r} is not one of {', '.join(ANSWER_TYPES)}", column="answer_type")
        if answer_type == "box":
            answer = self._box(draft.get("box"), raw_answer, stored, where, meta)
        else:
            try:
                answer = normalise_answer(given, answer_type, choices)
            except ValueError as err:
                raise BadRow(where, str(err), column="answer") from None
        if not answer:
            raise BadRow(where, "missing or empty", column="answer")
        if answer != raw_answer:
            meta["raw_answer"] = raw_answer

        try:
            prompt = render_choices(strip_image_tokens(draft["prompt"]), choices)
        except ValueError as err:
            raise BadRow(where, str(err), column="choices") from None
        prompt = apply_instruction(prompt, self.instruction)
        system = draft["system"] or self.system
        if record.split is not None and not meta.get("source_split"):
            meta["source_split"] = record.split
        source = meta.get("source_split") or meta.get("split")
        row = {
            "id": draft["id"] if draft["id"] is not None else f"{self.id_prefix}-{record.index:07d}",
            "task": draft["task"],
            "system": system,
            "prompt": prompt,
            "images": images,
            "answer": answer,
            "answer_type": answer_type,
            "choices": choices,
            "reasoning": draft["reasoning"],
            "response": draft["response"],
            "metadata": json.dumps(meta, default=_meta_default, sort_keys=True) if meta else None,
        }
        if meta and _nesting(meta) > MAX_NESTING:  # stored, it could not be read back (json.loads recursion)
            raise BadRow(where, f"a value nested more than {MAX_NESTING} levels deep (lists or objects inside each "
                                "other)", column="metadata")
        key = json.dumps([prompt, answer, answer_type, choices, system, [s.sha256 for s in stored]])
        row["_key"] = hashlib.sha256(key.encode()).digest()[:16]
        row["_content"] = content_hash(prompt, answer, [s.sha256 for s in stored])
        row["_source_split"] = str(source) if source not in (None, "") else None
        row["_bytes"] = sum(len(i["bytes"]) for i in images)
        row["_dropped_exchanges"] = draft.get("dropped_exchanges", 0)
        return row

    def _video(self, video: Any, base: Path, where: Where, images: list, stored: list, meta: dict) -> None:
        path = local_file(str(video), base, where, "video", self.ctx.allow_outside_paths)
        if not path.is_file():
            kind = not_a_file(path)
            raise BadRow(where, f"video {path} is {kind}, not a file" if kind else f"video file {path} not found",
                         column="video")
        try:
            frames, picks, total = sample_frames(path, self.video_frames)
            for frame in frames:
                img = self.processor.process_image(frame)
                images.append({"bytes": img.bytes, "path": None})
                stored.append(img)
        except ImageError as err:
            raise BadRow(where, str(err), column="video") from None
        meta["video"] = {"path": str(video), "frames": picks, "total_frames": total}

    def _box(self, spec: BoxSpec | None, raw: str, stored: list[StoredImage], where: Where, meta: dict) -> str:
        if spec is None:
            values = _NUMBER.findall(raw)
            fmt = "xyxy" if self.ctx.box_format == "auto" else self.ctx.box_format
            spec = BoxSpec(values=tuple(values), format=fmt, units=self.ctx.box_units)
        if len(stored) != 1:
            raise BadRow(where, f"a box answer needs exactly one image, found {len(stored)}", column="images")
        try:
            box, record = convert_box(spec.values, spec.format, spec.units, stored[0].original_size, stored[0].size)
        except ValueError as err:
            raise BadRow(where, str(err), column="answer") from None
        meta["box_conversion"] = record
        return format_box(box)
