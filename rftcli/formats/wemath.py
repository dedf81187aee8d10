"""We-Math (We-Math/We-Math on the Hub, and the testmini.json of its GitHub release): multi-step math
problems split into the knowledge concepts they need, all multiple choice.

Source columns: ID, split, knowledge concept, question, option (the options as ONE text: "A. 6; B. 8;
C. 10; D. 12; E. No correct answer"), answer (the option letter), key (which step of a multi-step
problem), question number, knowledge concept description, image_path (the image on the Hub; a file name
such as "3steps_1.png" in the release, relative to the file or --image-root).

Mapping: prompt = the question with the options listed as "A. ..." lines; choices = the options of
`option`; answer = the letter (answer_type choice). ID, key, split (as source_split), knowledge concept
and the rest go to metadata; ids are generated (an ID names a problem, which has several steps).

Sample (testmini.json):
    [{"ID": "3steps_1", "split": "testmini", "knowledge concept": "Properties of Squares", "question":
      "As shown in the figure, what is the side length of the square?", "option": "A. 6; B. 8; C. 10; D. 12;
      E. No correct answer", "answer": "B", "image_path": "3steps_1.png", "key": "3steps_1"}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftcli.formats import BadRow, Context, Where
from rftcli.formats.rows import choices_list, draft, image_refs, inline_choices, is_empty, metadata_dict

NAME = "wemath"
_DROP = {"question", "option", "answer", "image_path", "image", "images", "id", "metadata", "split"}


def detect(record: dict[str, Any]) -> bool:
    return {"question", "option", "answer"} <= record.keys() and ("ID" in record or "knowledge concept" in record)


def _choices(value: Any, where: Where) -> list[str] | None:
    """The options of `option`: "A. x; B. y" text, or already a list."""
    if is_empty(value):
        return None
    if isinstance(value, str) and not value.strip().startswith("["):
        found = inline_choices(value.strip())
        if found is None:
            raise BadRow(where, "expected the options as \"A. ...; B. ...\"", column="option")
        return found
    return choices_list(value, where, "option")


def convert(record: dict[str, Any], where: Where, base_dir: Path, ctx: Context) -> dict[str, Any]:
    row = dict(record)
    choices = _choices(row.get("option"), where)
    meta = metadata_dict(row.get("metadata"), where)
    meta.update({k: v for k, v in row.items() if k not in _DROP})
    if not is_empty(row.get("split")):
        meta["source_split"] = row["split"]
    images = image_refs(row.get("image_path")) + image_refs(row.get("image")) + image_refs(row.get("images"))
    out = draft({"id": row.get("id"), "choices": choices}, where, prompt=row.get("question"),
                answer=row.get("answer"), images=images, task="wemath", metadata=meta)
    out["answer_type"] = "choice"
    return out
