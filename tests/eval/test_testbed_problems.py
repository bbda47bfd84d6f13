"""Testbed problems: deterministic, disjoint splits, and every chain-of-thought checked independently."""

import json
import re
from pathlib import Path

import pytest

from tsdkd_jax.eval import NumericScorer, ProblemConfig, make_splits, write_splits

SPLITS = make_splits(3, 600, 150, 150)


def _question_ops(prompt: str) -> tuple[int, list[tuple[str, int]]]:
    """(start, [(op, k)]) read from the question text with this test's own phrase rules."""
    sentences = [s for s in re.split(r"(?<=[.?])\s+", prompt) if s]
    start = int(re.search(r"has (\d+) ", sentences[0]).group(1))
    ops = []
    for s in sentences[1:-1]:
        k = int(re.findall(r"\d+", s)[-1])
        ops.append(("*" if "multiplied" in s else "+" if "more" in s else "-", k))
    assert sentences[-1].startswith("How many")
    return start, ops


def _check_solution(row: dict) -> None:
    start, ops = _question_ops(row["prompt"])
    *steps, final = row["response"].split("\n")
    assert re.fullmatch(r"#### \d+", final)
    assert len(steps) == len(ops) == row["num_steps"]
    value = start
    for line, (op, k) in zip(steps, ops):
        a, sym, b, result = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)", line).groups()
        assert (int(a), sym, int(b)) == (value, op, k)  # carries the running value, follows the question
        value = {"+": value + k, "-": value - k, "*": value * k}[op]
        assert int(result) == value and 0 <= value <= 40
    assert final == f"#### {value}" and row["gold"] == str(value) and row["answer"] == value
    assert NumericScorer("strict")(row["response"], row).correct


def test_deterministic_from_seed():
    assert make_splits(3, 600, 150, 150) == SPLITS
    other = make_splits(4, 600, 150, 150)
    assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in SPLITS["train"]]


def test_splits_are_disjoint_and_sized():
    assert {k: len(v) for k, v in SPLITS.items()} == {"train": 600, "heldout": 150, "hard": 150}
    keys = {
        k: {_question_ops(r["prompt"]) and repr(_question_ops(r["prompt"])) for r in v}
        for k, v in SPLITS.items()
    }
    for name, rows in SPLITS.items():
        assert len(keys[name]) == len(rows), f"duplicate problems in {name}"
    assert not keys["train"] & keys["heldout"]
    assert not keys["train"] & keys["hard"]
    assert not keys["heldout"] & keys["hard"]
    # held-out membership is a property of the problem: a bigger train split still avoids it
    bigger = make_splits(3, 1500, 150, 150)
    assert bigger["heldout"] == SPLITS["heldout"]
    assert not {repr(_question_ops(r["prompt"])) for r in bigger["train"]} & keys["heldout"]


def test_hard_split_has_longer_chains():
    assert max(r["num_steps"] for r in SPLITS["train"]) == 4
    assert {r["num_steps"] for r in SPLITS["train"]} == {2, 3, 4}
    assert min(r["num_steps"] for r in SPLITS["hard"]) == 5


@pytest.mark.parametrize("split", ["train", "heldout", "hard"])
def test_every_solution_is_correct(split):
    for row in SPLITS[split]:
        _check_solution(row)


def test_config_and_files(tmp_path):
    cfg = ProblemConfig(
        min_steps=1, max_steps=1, hard_min_steps=2, hard_max_steps=2, max_value=20, multipliers=()
    )
    paths = write_splits(str(tmp_path), 0, 50, 10, 10, cfg)
    rows = [json.loads(line) for line in Path(paths["train"]).read_text().splitlines()]
    assert len(rows) == 50 and all(r["num_steps"] == 1 and "multiplied" not in r["prompt"] for r in rows)
    for r in rows:
        _check_solution(dict(r, prompt=r["prompt"]))
    with pytest.raises(ValueError, match="max_value"):
        make_splits(0, 1, 1, 1, ProblemConfig(max_value=5))
    with pytest.raises(ValueError, match="distinct problems"):
        make_splits(0, 10_000, 1, 1, ProblemConfig(min_steps=1, max_steps=1, max_value=18, multipliers=()))
