"""Which adapter reads an input: the layouts prepare-data knows, by `--format` name, and their detection.

`rftcli.formats` holds what readers and adapters share (`Where`, `BadRow`, `Record`, `Context`, `BoxSpec`,
`Input`); the adapters import it, and this module imports the adapters, so the package never imports an
adapter back. Adapters load when `layouts()` is first called, not when prepare-data's options are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

from rftcli.formats import Input, Record


def layouts() -> dict[str, Any]:
    """Adapter modules by --format name, in detection order."""
    from rftcli.formats import (
        ai2d,
        aokvqa,
        chartqa,
        clevr,
        geometry3k,
        llava,
        mathvista,
        mmbench,
        ocrbench,
        refcoco,
        rows,
        scienceqa,
        vqa,
        wemath,
    )

    return {"llava": llava, "mathvista": mathvista, "clevr": clevr, "refcoco": refcoco, "geometry3k": geometry3k,
            "scienceqa": scienceqa, "aokvqa": aokvqa, "chartqa": chartqa, "vqa": vqa, "mmbench": mmbench,
            "ai2d": ai2d, "wemath": wemath, "ocrbench": ocrbench, "rows": rows}


FORMATS = ("auto", "rows", "llava", "mathvista", "geometry3k", "clevr", "refcoco", "scienceqa", "aokvqa", "chartqa",
           "vqa", "mmbench", "ai2d", "wemath", "ocrbench")


def detect_layout(record: dict[str, Any], source: str) -> str:
    """The one layout whose adapter claims `record`; "rows" when none does; an error when several do."""
    matches = [name for name, mod in layouts().items() if name != "rows" and mod.detect(record)]
    if len(matches) > 1:
        raise ValueError(f"{source}: the first record fits several layouts ({', '.join(matches)}); "
                         "choose one with --format")
    return matches[0] if matches else "rows"


def resolve_layout(opened: Input, requested: str, source: str) -> tuple[str, Iterator[Record]]:
    """The layout to use and the record stream (records read while detecting are put back)."""
    if requested != "auto":
        return requested, opened.records
    if opened.layout_hint:
        return opened.layout_hint, opened.records
    seen: list[Record] = []
    for rec in opened.records:
        seen.append(rec)
        if rec.data is not None:
            return detect_layout(rec.data, source), chain(seen, opened.records)
        if len(seen) >= 1000:
            break
    return "rows", chain(seen, opened.records)
