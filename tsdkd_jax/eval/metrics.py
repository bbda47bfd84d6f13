"""Accuracy with a 95 % Wilson interval, and the per-example JSONL."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 %, 100 % and small n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 % (100 %) the bound is exactly 0 (1); rounding would leave ~1e-17 in the JSON and the table
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def accuracy(per_example: Sequence[float], prefix: str = "") -> dict[str, float]:
    """{accuracy, ci95_low, ci95_high, n, correct} from per-example scores in [0, 1].

    With several samples per example the score is that example's mean correctness, and the interval treats
    each example (not each sample) as one trial, which does not overstate the evidence.
    """
    n = len(per_example)
    k = float(sum(per_example))
    lo, hi = wilson_interval(k, n)
    acc = k / n if n else 0.0
    keys = ("accuracy", "ci95_low", "ci95_high", "n", "correct")
    return {prefix + key: v for key, v in zip(keys, (acc, lo, hi, n, k))}


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line (UTF-8, non-ASCII kept); parent folders are created."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)


def read_json(path: str | os.PathLike):
    """The JSON value in `path`, or None when it is missing or unreadable (a cache that is rebuilt)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, value) -> None:
    """Writes `value` to `path` through a temporary file and a rename (never half-written)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)
