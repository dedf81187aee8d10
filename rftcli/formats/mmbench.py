"""MMBench and the other multiple-choice sets VLMEvalKit publishes the same way: one column per option.

Layouts read:
    VLMEvalKit TSV     MMBench_DEV_EN.tsv and kin (also MMBench_CN, CCBench, SEEDBench_IMG, AI2D_TEST ...):
                       index, question, hint, A, B, C, D (E ... where a set has more), answer (the option
                       letter; absent in test splits), category, image (base64 JPEG), source, l2-category,
                       comment, split. Options a question lacks are empty cells. To save space, a row whose
                       image repeats an earlier one (MMBench's circular copies) holds that row's `index`
                       instead of the picture.
    Hub Parquet        lmms-lab/MMBench (en, cn, cc configs), lmms-lab/MMBench_EN: the same columns with image
                       as an image struct, L2-category or l2-category, and the text "nan" for a missing
                       option or hint (pandas' NaN written as text); HuggingFaceM4/MMBench keeps the base64.

Mapping: prompt = "Hint: <hint>\\nQuestion: <question>" as VLMEvalKit and lmms-eval build it when there is
a hint, else the question; the options are listed after it as "A. ..." lines. choices = the non-empty
option columns A, B, C ... in order; answer = the option letter (answer_type choice). id = index; category,
l2-category, source, comment go to metadata and `split` to metadata.source_split.

An image given as an index is resolved by reading the TSV once more, keeping only the pictures other rows
point to (for MMBench_DEV_EN, about the 1,164 originals of its 4,329 rows).

Sample (a row of MMBench_DEV_EN.tsv, tab-separated; image shortened):
    index  question                          hint                       A      B      C    D    answer  category ...  image
    0      Which of the following ... ?      The passage below ...      north  south  nan       A       ...           /9j/4AAQ...
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import draft, image_refs, is_empty, metadata_dict

NAME = "mmbench"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DROP = {"question", "hint", "answer", "image", "images", "index", "id", "metadata", "split", *_LETTERS}


def detect(record: dict[str, Any]) -> bool:
    return {"question", "A", "B"} <= record.keys()


def missing(value: Any) -> bool:
    """None, empty text, NaN, or the text "nan" that pandas writes for a missing cell."""
    if isinstance(value, float) and value != value:
        return True
    return is_empty(value) or (isinstance(value, str) and value.strip().lower() == "nan")


def option_columns(row: dict[str, Any], where: Where) -> list[str]:
    """The texts of the option columns A, B, C ... that hold one; an option after an empty one is an error
    (its letter would change)."""
    options: list[str] = []
    gap = None
    for letter in _LETTERS:
        if letter not in row:
            break
        if missing(row[letter]):
            gap = gap or letter
            continue
        if gap is not None:
            raise BadRow(where, f"option {letter} is given but option {gap} is empty", column=letter)
        options.append(str(row[letter]).strip())
    return options


def _is_reference(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip().isdigit()


@functools.lru_cache(maxsize=2)
def _shared_images(source: str, stamp: tuple[int, int]) -> dict[str, str]:
    """{index: image} of the rows of a VLMEvalKit TSV whose image other rows give by index."""
    from rftcli.formats.readers import read_csv

    path = Path(source)
    wanted = {str(r.data["image"]).strip() for r in read_csv(path)
              if r.data is not None and _is_reference(r.data.get("image"))}
    return {str(r.data["index"]).strip(): r.data["image"] for r in read_csv(path)
            if r.data is not None and str(r.data.get("index")).strip() in wanted
            and not _is_reference(r.data.get("image")) and not missing(r.data.get("image"))}


def _image(value: Any, where: Where) -> list[Any]:
    """The row's image; an index (VLMEvalKit's pointer to another row's picture) is looked up in the file."""
    if not _is_reference(value):
        return image_refs(value) if not missing(value) else []
    source = Path(where.source)
    if source.suffix.lower() not in (".tsv", ".csv") or not source.is_file():
        raise BadRow(where, f"image holds {value!r}, a row index, but only a VLMEvalKit TSV can be searched for "
                            "that row's image", column="image")
    stat = source.stat()
    found = _shared_images(str(source), (stat.st_mtime_ns, stat.st_size)).get(str(value).strip())
    if found is None:
        raise BadRow(where, f"image holds {value!r}, the index of another row, but no row with that index "
                            "holds an image", column="image")
    return [found]


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = option_columns(row, where)
    prompt = row.get("question")
    if not missing(row.get("hint")) and not is_empty(prompt):
        prompt = f"Hint: {str(row['hint']).strip()}\nQuestion: {str(prompt).strip()}"
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP and not missing(v)})
    if not missing(row.get("split")):
        meta["source_split"] = row["split"]
    answer = row.get("answer") if not missing(row.get("answer")) else None
    images = _image(row.get("image"), where) + image_refs(row.get("images"))
    ident = row.get("index", row.get("id"))
    out = draft({"id": ident, "choices": choices or None}, where, prompt=prompt, answer=answer, images=images,
                task="mmbench", metadata=meta)
    out["answer_type"] = "choice"
    return out
