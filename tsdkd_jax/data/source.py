"""Reading raw rows: a hub dataset by name (online) or local .json / .jsonl / .parquet files.

Local JSON is parsed row by row with the standard library rather than through `datasets`' Arrow loader, so
each row keeps its own types (a number where text is expected stays a number and is counted as a bad row
instead of failing schema inference), a malformed line is one bad row rather than a crash, and nothing is
written to the `datasets` cache. Row indices are 0-based positions in the concatenated source (for JSONL,
line number − 1 counting only non-blank lines; files of a folder in sorted order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from tsdkd_jax.data.config import LOCAL_FORMATS, looks_local

# Stands in for a row whose JSON could not be parsed; the prompt builder counts it as bad.
INVALID_JSON = "__invalid_json__"


class Rows:
    """A sized, iterable view of the source rows (dicts), with a name for error messages."""

    def __init__(self, rows: Sequence[Any], name: str):
        self._rows = rows
        self.name = name

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _read_json(path: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:  # name the file: the bare error does not
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    if not path.endswith(".jsonl"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # many ".json" datasets are really JSON Lines
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            return [data]
    rows: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({INVALID_JSON: line[:80]})
    return rows


def _read_parquet(path: str) -> list[Any]:
    import pyarrow.parquet as pq  # a dependency of `datasets`

    return pq.read_table(path).to_pylist()


def _read_file(path: str) -> list[Any]:
    if path.endswith(".parquet"):
        return _read_parquet(path)
    return _read_json(path)


def _local_files(path: str) -> list[str]:
    if os.path.isfile(path):
        if not path.endswith(LOCAL_FORMATS):
            raise ValueError(f"{path}: unsupported data file; accepted formats: {', '.join(LOCAL_FORMATS)}")
        return [path]
    files = sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(LOCAL_FORMATS)
    )
    if not files:
        raise ValueError(f"{path}: folder has no data files; accepted formats: {', '.join(LOCAL_FORMATS)}")
    kinds = {os.path.splitext(f)[1] for f in files}
    if ".parquet" in kinds and len(kinds) > 1:
        raise ValueError(f"{path}: folder mixes parquet and JSON files; keep one format per folder")
    return files


def read_rows(path: str, *, subset: str = "", split: str = "train", max_rows: int = 0) -> Rows:
    """Rows of a local file/folder, or of `datasets.load_dataset(path, subset, split=split)` for a hub
    name; `max_rows` > 0 keeps only the first rows."""
    local = os.path.expanduser(path)
    if looks_local(path):
        if not os.path.exists(local):
            raise FileNotFoundError(f"{path}: no such data file or folder")
        rows: list[Any] = []
        for f in _local_files(local):
            rows.extend(_read_file(f))
            if max_rows and len(rows) >= max_rows:
                break
        return Rows(rows[:max_rows] if max_rows else rows, path)
    import datasets

    try:
        ds = datasets.load_dataset(path, subset or None, split=split)
    except Exception as e:  # unreachable hub, unknown name, offline mode: all end in the same advice
        raise ValueError(
            f"data.path={path!r}: could not load it as a Hugging Face hub dataset ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}). Offline, or a typo? Point "
            f"data.path at a local file or folder ({', '.join(LOCAL_FORMATS)}) instead."
        ) from e
    if max_rows:
        ds = ds.select(range(min(max_rows, len(ds))))
    return Rows(ds, f"{path}[{split}]")
