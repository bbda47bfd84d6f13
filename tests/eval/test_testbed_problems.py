"""Testbed problems (v2): deterministic, disjoint splits, every style of every solution checked independently
and accepted by the strict scorer, recovery rows written as designed."""

import json
import re
from pathlib import Path

import pytest

from tsdkd_jax.eval import NumericScorer, ProblemConfig, make_splits, write_splits
from tsdkd_jax.eval import testbed_problems as tp

CFG = ProblemConfig(min_steps=2, max_steps=4, hard_min_steps=5, hard_max_steps=6, recovery_fraction=0.2)
SPLITS = make_splits(3, 600, 150, 150, CFG, n_validation=100)
MUL_WORDS = {"doubles": 2, "triples": 3}


def _question_ops(prompt: str) -> tuple[int, list[tuple[str, int]]]:
    """(start, [(op, k)]) read from the question text with this test's own phrase rules."""
    sentences = [s for s in re.split(r"(?<=[.?])\s+", prompt) if s]
    start = int(re.search(r"has (\d+) ", sentences[0]).group(1))
    ops = []
    for s in sentences[1:-1]:
        word = next((w for w in MUL_WORDS if w in s), None)
        if word:
            ops.append(("*", MUL_WORDS[word]))
        else:
            ops.append(("+" if "more" in s else "-", int(re.findall(r"\d+", s)[-1])))
    assert sentences[-1].startswith("How many")
    return start, ops


LINE = re.compile(r"(\d+) (?:([-+*])|(plus|minus|times)) (\d+) (?:=|is) (\d+)")
WORDS = {"plus": "+", "minus": "-", "times": "*"}


def _check_lines(lines: list[str], start: int, ops, name: str | None = None) -> int:
    """Checks solution lines (any style) against the question's ops; returns the final value."""
    if lines and lines[0].endswith("."):  # the optional restating line
        assert lines[0] == f"{name} has {start}."
        lines = lines[1:]
    assert len(lines) == len(ops)
    value = start
    for line, (op, k) in zip(lines, ops):
        m = LINE.fullmatch(line)
        assert m, line
        a, sym, word, b, result = m.groups()
        assert (sym or WORDS[word]) == op
        operands = (int(a), int(b))
        assert operands == (value, k) or (op != "-" and operands == (k, value))  # + and * commute
        value = {"+": value + k, "-": value - k, "*": value * k}[op]
        assert int(result) == value and 0 <= value <= 40
    return value


def _check_solution(row: dict) -> None:
    start, ops = _question_ops(row["prompt"])
    *steps, final = row["response"].split("\n")
    assert re.fullmatch(r"#### \d+", final)
    assert len(ops) == row["num_steps"]
    value = _check_lines(steps, start, ops, row["name"])
    assert final == f"#### {value}" and row["gold"] == str(value) and row["answer"] == value
    assert NumericScorer("strict")(row["response"], row).correct
    assert row["prefix"] == "" and row["continuation"] == row["response"]


def test_deterministic_from_seed():
    assert make_splits(3, 600, 150, 150, CFG, n_validation=100) == SPLITS
    other = make_splits(4, 600, 150, 150, CFG, n_validation=100)
    assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in SPLITS["train"]]


def test_splits_are_disjoint_and_sized():
    sizes = {k: len(v) for k, v in SPLITS.items()}
    assert sizes == {"train": 600, "validation": 100, "heldout": 150, "hard": 150, "recovery": 120}
    keys = {k: {repr(_question_ops(r["prompt"])) for r in v} for k, v in SPLITS.items() if k != "recovery"}
    for name, found in keys.items():
        assert len(found) == len(SPLITS[name]), f"duplicate problems in {name}"
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
    # membership is a property of the problem: a bigger train split still avoids the others
    bigger = make_splits(3, 1500, 150, 150, CFG, n_validation=100)
    assert bigger["heldout"] == SPLITS["heldout"] and bigger["validation"] == SPLITS["validation"]
    bigger_train = {repr(_question_ops(r["prompt"])) for r in bigger["train"]}
    assert not bigger_train & (keys["heldout"] | keys["validation"])


def test_hard_split_has_longer_chains():
    assert {r["num_steps"] for r in SPLITS["train"]} == {2, 3, 4}
    assert min(r["num_steps"] for r in SPLITS["hard"]) == 5


@pytest.mark.parametrize("split", ["train", "validation", "heldout", "hard"])
def test_every_solution_is_correct(split):
    for row in SPLITS[split]:
        _check_solution(row)


def test_every_style_solves_and_scores_correct():
    for row in SPLITS["heldout"][:40]:
        start, ops = _question_ops(row["prompt"])
        texts = set()
        for style in tp.all_styles(len(ops)):
            text = "\n".join(
                tp.solution_lines(row["name"], row["start"], [tuple(o) for o in row["ops"]], style)
            )
            *steps, final = text.split("\n")
            assert final == f"#### {_check_lines(steps, start, ops, row['name'])}"
            assert NumericScorer("strict")(text, row).correct
            texts.add(text)
        assert len(texts) >= 4  # restate × form at least; operand orders add more when values differ


def test_styles_are_drawn_with_both_outcomes():
    rows = SPLITS["train"]
    for key in ("restate", "words"):
        share = sum(r["style"][key] for r in rows) / len(rows)
        assert 0.4 < share < 0.6, (key, share)


def test_recovery_rows_have_one_wrong_step_then_continue_from_the_true_value():
    train = {r["prompt"]: r for r in SPLITS["train"]}
    for row in SPLITS["recovery"]:
        assert row["prompt"] in train and row["response"] == train[row["prompt"]]["response"]
        assert row["prefix"].endswith("\n")
        start, ops = _question_ops(row["prompt"])
        written = row["prefix"].rstrip("\n").split("\n")
        if written[0].endswith("."):
            written = written[1:]
        j = row["wrong_step"]
        assert len(written) == j + 1
        value = _check_lines(written[:j], start, ops[:j], row["name"]) if j else start
        truth = {"+": value + ops[j][1], "-": value - ops[j][1], "*": value * ops[j][1]}[ops[j][0]]
        wrong = int(LINE.fullmatch(written[j]).group(5))
        assert 1 <= abs(wrong - truth) <= 3 and wrong >= 0
        *rest, final = row["continuation"].split("\n")
        # the continuation carries on from the true value, never from the wrong one
        assert final == f"#### {_check_lines(rest, truth, ops[j + 1 :])}" and final == f"#### {row['gold']}"
        assert NumericScorer("strict")(row["prefix"] + row["continuation"], row).correct


def test_config_and_files(tmp_path):
    cfg = ProblemConfig(
        min_steps=1, max_steps=1, hard_min_steps=2, hard_max_steps=2, max_value=20, multipliers=(),
        recovery_fraction=0.5,
    )  # fmt: skip
    paths = write_splits(str(tmp_path), 0, 50, 10, 10, cfg, n_validation=10)
    assert set(paths) == {"train", "validation", "heldout", "hard", "sft"}
    rows = [json.loads(line) for line in Path(paths["train"]).read_text().splitlines()]
    assert len(rows) == 50 and all(r["num_steps"] == 1 and "doubles" not in r["prompt"] for r in rows)
    for r in rows:
        _check_solution(r)
    sft = [json.loads(line) for line in Path(paths["sft"]).read_text().splitlines()]
    assert len(sft) == 75 and sum(bool(r["prefix"]) for r in sft) == 25
    with pytest.raises(ValueError, match="max_value"):
        make_splits(0, 1, 1, 1, ProblemConfig(max_value=5))
    with pytest.raises(ValueError, match="validation_fraction"):
        make_splits(0, 1, 1, 1, ProblemConfig(heldout_fraction=0.5, validation_fraction=0.5))
    with pytest.raises(ValueError, match="distinct problems"):
        make_splits(0, 10_000, 1, 1, ProblemConfig(min_steps=1, max_steps=1, max_value=18, multipliers=()))


def test_fork_positions_by_hand():
    from tsdkd_jax.testbed.forks import fork_positions

    own = [5, 1, 7, 2, 9]
    assert fork_positions(own, [[5, 1, 7, 2, 9]]) == []  # identical: no fork
    assert fork_positions(own, [[6, 1], [5, 1, 8], [5, 1, 7, 3, 9, 9]]) == [0, 2, 3]
    assert fork_positions(own, [[5, 1]]) == []  # a shorter alternative that agrees throughout


def test_recovery_prefix_tokenizes_at_a_line_boundary(tmp_path):
    """prefix tokens + continuation tokens = the tokens of the whole written solution, so the masked prefix
    puts the model in exactly the state it would be in after writing those lines itself."""
    from tsdkd_jax import data

    texts = [r["prompt"] for r in SPLITS["train"]] + [r["response"] for r in SPLITS["train"]]
    tok = data.train_tokenizer(texts, str(tmp_path), vocab_size=400)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    for row in SPLITS["recovery"]:
        assert ids(row["prefix"]) + ids(row["continuation"]) == ids(row["prefix"] + row["continuation"])
