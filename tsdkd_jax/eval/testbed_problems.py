"""Seeded multi-step arithmetic word problems whose solutions branch: several valid styles, one answer.

A problem starts from a count and applies 2-3 operations (add k, subtract k, multiply by m), each one short
sentence; the solution writes one line per step and the final answer the GSM8K way. Every training example
draws its own *style*, so a model trained on them learns a distribution with real forks (testbed v2, issue 11):

    Mia has 7 apples. Mia buys 5 more. Mia gives away 3. Mia doubles them. How many apples now?
    ->  7 + 5 = 12          or   Mia has 7.           (optional restating line)
        12 - 3 = 9               5 plus 7 is 12       (sentence form; + and * in either operand order)
        9 * 2 = 18               12 minus 3 is 9
        #### 18                  2 times 9 is 18
                                 #### 18

Style = (restate the start?, equation or sentence form, and per + / * step the operand order), each a fair
coin. The forks are the first token (restating line or not), the operator word after the first number
(form), and the first number of every + / * line (order). All styles end in `#### N`, so the strict GSM8K
scorer (`scorers.NumericScorer("strict")`) accepts each of them.

Recovery rows (`recovery_rows`): the same training problems with one wrong intermediate written (its result
off by 1-3) as a `prefix` that a loss should not be trained on (data.response_prefix_field puts it after the
assistant header, on the prompt side), then `continuation`: the remaining lines computed from the true value,
so the model learns to carry on correctly from a trajectory with a mistake in it (the kind a student writes
and a teacher has to score). Ordinary rows have prefix "" and continuation = response.

Splits are disjoint by construction: a problem's arithmetic signature (start, operations) is hashed with the
seed into a held-out, a validation or a train bucket, so no split ever contains another's problem whatever
the sizes (two problems that differ only in names/items count as the same). "hard" uses the held-out bucket
and longer chains. Everything is a pure function of (seed, sizes, config).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from tsdkd_jax.eval.metrics import write_jsonl

NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Tom")
ITEMS = ("apples", "coins", "books", "stamps", "marbles", "cards")
ADD = ("{name} buys {k} more.", "{name} finds {k} more.", "{name} gets {k} more.")
SUB = ("{name} gives away {k}.", "{name} loses {k}.", "{name} sells {k}.")
MUL = {2: "{name} doubles them.", 3: "{name} triples them."}
MUL_OTHER = "{name} multiplies them by {k}."
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
WORD = {"add": "plus", "sub": "minus", "mul": "times"}
SPLIT_NAMES = ("train", "validation", "heldout", "hard")


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    min_steps: int = 2  # operations per train / validation / held-out problem
    max_steps: int = 3
    hard_min_steps: int = 4  # operations per "hard" held-out problem (longer than any train chain)
    hard_max_steps: int = 5
    max_value: int = 40  # every intermediate value lies in [0, max_value]
    max_operand: int = 9  # add/subtract 1..max_operand
    multipliers: tuple[int, ...] = (2, 3)  # empty: no multiplication steps
    heldout_fraction: float = 0.2  # share of problem signatures reserved for held-out / hard
    validation_fraction: float = 0.1  # share reserved for validation (lr selection)
    recovery_fraction: float = 0.0  # recovery rows added per training problem (see recovery_rows)

    def validate(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 1 <= self.hard_min_steps <= self.hard_max_steps:
            raise ValueError("need 1 <= hard_min_steps <= hard_max_steps")
        if self.max_value < 2 * self.max_operand:
            raise ValueError(
                f"max_value={self.max_value} must be at least 2 * max_operand={self.max_operand}"
            )
        if not (0.0 < self.heldout_fraction and 0.0 < self.validation_fraction) or (
            self.heldout_fraction + self.validation_fraction >= 1.0
        ):
            raise ValueError(
                "need heldout_fraction > 0, validation_fraction > 0 and their sum < 1, got "
                f"{self.heldout_fraction}, {self.validation_fraction}"
            )
        if not 0.0 <= self.recovery_fraction <= 1.0:
            raise ValueError(f"recovery_fraction must be in [0, 1], got {self.recovery_fraction}")


def _bucket(seed: int, start: int, ops, cfg: ProblemConfig) -> str:
    digest = hashlib.blake2b(repr((seed, start, ops)).encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    if u < cfg.heldout_fraction:
        return "heldout"
    return "validation" if u < cfg.heldout_fraction + cfg.validation_fraction else "train"


def _draw_chain(rng: np.random.Generator, steps: int, cfg: ProblemConfig) -> tuple[int, tuple]:
    value = start = int(rng.integers(1, cfg.max_value // 2 + 1))
    ops = []
    for _ in range(steps):
        choices = []
        if value + 1 <= cfg.max_value:
            choices.append(("add", int(rng.integers(1, min(cfg.max_operand, cfg.max_value - value) + 1))))
        if value >= 1:
            choices.append(("sub", int(rng.integers(1, min(cfg.max_operand, value) + 1))))
        fits = [m for m in cfg.multipliers if 1 <= value and value * m <= cfg.max_value]
        if fits:
            choices.append(("mul", int(fits[rng.integers(len(fits))])))
        op = choices[int(rng.integers(len(choices)))]
        value = apply(value, op)
        ops.append(op)
    return start, tuple(ops)


def apply(value: int, op: tuple[str, int]) -> int:
    kind, k = op
    return value + k if kind == "add" else value - k if kind == "sub" else value * k


@dataclasses.dataclass(frozen=True)
class Style:
    restate: bool  # a first line "<name> has <start>."
    words: bool  # "12 minus 3 is 9" instead of "12 - 3 = 9"
    swaps: tuple[bool, ...]  # per step: operands swapped (only + and * lines honour it)


def draw_style(rng: np.random.Generator, steps: int) -> Style:
    coins = rng.integers(0, 2, size=steps + 2)
    return Style(bool(coins[0]), bool(coins[1]), tuple(bool(c) for c in coins[2:]))


def all_styles(steps: int) -> list[Style]:
    """Every style of a `steps`-operation solution (for fork finding and tests)."""
    out = []
    for code in range(2 ** (steps + 2)):
        bits = [(code >> i) & 1 == 1 for i in range(steps + 2)]
        out.append(Style(bits[0], bits[1], tuple(bits[2:])))
    return out


def step_line(value: int, op: tuple[str, int], words: bool, swap: bool, result: int | None = None) -> str:
    """One solution line; `result` overrides the written result (a wrong intermediate)."""
    kind, k = op
    a, b = (k, value) if swap and kind != "sub" else (value, k)
    new = apply(value, op) if result is None else result
    return f"{a} {WORD[kind]} {b} is {new}" if words else f"{a} {SYMBOL[kind]} {b} = {new}"


def solution_lines(name: str, start: int, ops, style: Style) -> list[str]:
    lines = [f"{name} has {start}."] if style.restate else []
    value = start
    for op, swap in zip(ops, style.swaps):
        lines.append(step_line(value, op, style.words, swap))
        value = apply(value, op)
    return [*lines, f"#### {value}"]


def question(name: str, items: str, start: int, ops, rng: np.random.Generator) -> str:
    sentences = [f"{name} has {start} {items}."]
    for kind, k in ops:
        if kind == "mul":
            sentences.append(MUL.get(k, MUL_OTHER).format(name=name, k=k))
        else:
            table = ADD if kind == "add" else SUB
            sentences.append(table[rng.integers(len(table))].format(name=name, k=k))
    sentences.append(f"How many {items} now?")
    return " ".join(sentences)


def render(start: int, ops: tuple[tuple[str, int], ...], rng: np.random.Generator) -> dict[str, Any]:
    """Question, one randomly styled step-by-step solution and the answer of one arithmetic chain."""
    name, items = NAMES[rng.integers(len(NAMES))], ITEMS[rng.integers(len(ITEMS))]
    prompt = question(name, items, start, ops, rng)
    style = draw_style(rng, len(ops))
    response = "\n".join(solution_lines(name, start, ops, style))
    value = start
    for op in ops:
        value = apply(value, op)
    return {"prompt": prompt, "response": response, "gold": str(value), "answer": value,
            "name": name, "start": start, "ops": [list(op) for op in ops],
            "style": dataclasses.asdict(style), "prefix": "", "continuation": response}  # fmt: skip


def recovery_row(row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """`row` with one step's result written wrong (off by 1-3) in `prefix`, the true rest in `continuation`."""
    ops = [tuple(op) for op in row["ops"]]
    style = Style(row["style"]["restate"], row["style"]["words"], tuple(row["style"]["swaps"]))
    j = int(rng.integers(len(ops)))
    value = row["start"]
    for op in ops[:j]:
        value = apply(value, op)
    true = apply(value, ops[j])
    wrong = true + int(rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if true + d >= 0]))
    lines = solution_lines(row["name"], row["start"], ops, style)
    at = j + int(style.restate)  # the wrong step's line
    lines[at] = step_line(value, ops[j], style.words, style.swaps[j], result=wrong)
    prefix = "\n".join(lines[: at + 1]) + "\n"
    return dict(row, prefix=prefix, continuation="\n".join(lines[at + 1 :]), wrong_step=j)


def _split(seed: int, index: int, n: int, steps: tuple[int, int], bucket: str, cfg: ProblemConfig):
    rng = np.random.default_rng([seed, index])
    seen, rows, misses = set(), [], 0
    while len(rows) < n and misses < 20_000:  # 20k draws in a row with nothing new: the space is used up
        start, ops = _draw_chain(rng, int(rng.integers(steps[0], steps[1] + 1)), cfg)
        if (start, ops) in seen or _bucket(seed, start, ops, cfg) != bucket:
            misses += 1
            continue
        seen.add((start, ops))
        misses = 0
        rows.append(dict(render(start, ops, rng), num_steps=len(ops)))
    if len(rows) < n:
        raise ValueError(
            f"only {len(rows)} distinct problems of {steps} steps found, {n} asked: widen config"
        )
    return rows


def make_splits(
    seed: int, n_train: int, n_heldout: int, n_hard: int, config: ProblemConfig | None = None,
    n_validation: int = 0,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """{"train", "validation", "heldout", "hard", "recovery"}: rows with prompt, response, gold, answer,
    num_steps, id, split, and the generator's fields (name, start, ops, style, prefix, continuation).
    "recovery" holds round(recovery_fraction * n_train) recovery rows of training problems."""
    cfg = config or ProblemConfig()
    cfg.validate()
    normal, hard = (cfg.min_steps, cfg.max_steps), (cfg.hard_min_steps, cfg.hard_max_steps)
    splits = {
        "train": _split(seed, 0, n_train, normal, "train", cfg),
        "validation": _split(seed, 3, n_validation, normal, "validation", cfg),
        "heldout": _split(seed, 1, n_heldout, normal, "heldout", cfg),
        "hard": _split(seed, 2, n_hard, hard, "heldout", cfg),
    }
    rng = np.random.default_rng([seed, 4])
    n_rec = round(cfg.recovery_fraction * n_train)
    picks = rng.choice(n_train, size=n_rec, replace=False) if n_rec else []
    splits["recovery"] = [recovery_row(splits["train"][int(i)], rng) for i in picks]
    for name, rows in splits.items():
        for i, row in enumerate(rows):
            row.update(id=f"{name}-{i}", split=name)
    return splits


def write_splits(
    out_dir: str, seed: int, n_train: int, n_heldout: int, n_hard: int, config=None, n_validation: int = 0
) -> dict:
    """Writes <out_dir>/{train,validation,heldout,hard}.jsonl and sft.jsonl (train + recovery rows, for SFT
    with data.response_prefix_field="prefix", data.response_field="continuation"); returns {name: path}."""
    splits = make_splits(seed, n_train, n_heldout, n_hard, config, n_validation)
    files = {name: splits[name] for name in SPLIT_NAMES}
    files["sft"] = splits["train"] + splits["recovery"]
    paths = {}
    for name, rows in files.items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], rows)
    return paths
