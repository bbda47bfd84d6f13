"""Seeded multi-step arithmetic word problems with step-by-step solutions ending in `#### N` (the testbed).

A problem starts from a count and applies 2-4 operations (add k, subtract k, multiply by m), each stated in
one sentence; the solution writes one equation per step and the final answer the GSM8K way:

    Mia has 7 apples. Mia buys 5 more. Mia gives away 3. Then the number of apples is multiplied by 2.
    How many apples does Mia have now?
    ->  7 + 5 = 12
        12 - 3 = 9
        9 * 2 = 18
        #### 18

Every intermediate value stays in [0, max_value] and operands are single digits, so each step is a small
lookup a 2-layer × 128 model can learn on CPU in minutes; what has to be learnt is reading the next sentence
and carrying the running value, and the "hard" split tests that on longer chains than training ever shows.
Scored with `scorers.NumericScorer("strict")` against "gold".

Splits are disjoint by construction: a problem's arithmetic signature (start, operations) is hashed with the
seed into a train or a held-out bucket, so train never contains a held-out problem whatever the split sizes
(two problems that differ only in names/items count as the same). "hard" uses the held-out bucket and longer
chains. Everything is a pure function of (seed, sizes, config).
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
MUL = "Then the number of {items} is multiplied by {k}."
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    min_steps: int = 2  # operations per train / held-out problem
    max_steps: int = 4
    hard_min_steps: int = 5  # operations per "hard" held-out problem (longer than any train chain)
    hard_max_steps: int = 7
    max_value: int = 40  # every intermediate value lies in [0, max_value]
    max_operand: int = 9  # add/subtract 1..max_operand
    multipliers: tuple[int, ...] = (2, 3)  # empty: no multiplication steps
    heldout_fraction: float = 0.2  # share of problem signatures reserved for held-out / hard

    def validate(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 1 <= self.hard_min_steps <= self.hard_max_steps:
            raise ValueError("need 1 <= hard_min_steps <= hard_max_steps")
        if self.max_value < 2 * self.max_operand:
            raise ValueError(
                f"max_value={self.max_value} must be at least 2 * max_operand={self.max_operand}"
            )
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def _signature_bucket(seed: int, start: int, ops: tuple[tuple[str, int], ...]) -> float:
    digest = hashlib.blake2b(repr((seed, start, ops)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


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
        value = _apply(value, op)
        ops.append(op)
    return start, tuple(ops)


def _apply(value: int, op: tuple[str, int]) -> int:
    kind, k = op
    return value + k if kind == "add" else value - k if kind == "sub" else value * k


def render(start: int, ops: tuple[tuple[str, int], ...], rng: np.random.Generator) -> dict[str, Any]:
    """Question, step-by-step solution and answer of one arithmetic chain (names/items drawn from rng)."""
    name, items = NAMES[rng.integers(len(NAMES))], ITEMS[rng.integers(len(ITEMS))]
    sentences = [f"{name} has {start} {items}."]
    lines, value = [], start
    for kind, k in ops:
        if kind == "mul":
            sentences.append(MUL.format(items=items, k=k))
        else:
            table = ADD if kind == "add" else SUB
            sentences.append(table[rng.integers(len(table))].format(name=name, k=k))
        new = _apply(value, (kind, k))
        lines.append(f"{value} {SYMBOL[kind]} {k} = {new}")
        value = new
    sentences.append(f"How many {items} does {name} have now?")
    lines.append(f"#### {value}")
    return {"prompt": " ".join(sentences), "response": "\n".join(lines), "gold": str(value), "answer": value}


def _split(seed: int, index: int, n: int, steps: tuple[int, int], heldout: bool, cfg: ProblemConfig):
    rng = np.random.default_rng([seed, index])
    seen, rows, misses = set(), [], 0
    while len(rows) < n and misses < 20_000:  # 20k draws in a row with nothing new: the space is used up
        start, ops = _draw_chain(rng, int(rng.integers(steps[0], steps[1] + 1)), cfg)
        if (start, ops) in seen or (_signature_bucket(seed, start, ops) < cfg.heldout_fraction) != heldout:
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
    seed: int, n_train: int, n_heldout: int, n_hard: int, config: ProblemConfig | None = None
) -> dict[str, list[dict[str, Any]]]:
    """{"train", "heldout", "hard"}: rows with prompt, response, gold, answer, num_steps, id, split."""
    cfg = config or ProblemConfig()
    cfg.validate()
    normal, hard = (cfg.min_steps, cfg.max_steps), (cfg.hard_min_steps, cfg.hard_max_steps)
    splits = {
        "train": _split(seed, 0, n_train, normal, False, cfg),
        "heldout": _split(seed, 1, n_heldout, normal, True, cfg),
        "hard": _split(seed, 2, n_hard, hard, True, cfg),
    }
    for name, rows in splits.items():
        for i, row in enumerate(rows):
            row.update(id=f"{name}-{i}", split=name)
    return splits


def write_splits(out_dir: str, seed: int, n_train: int, n_heldout: int, n_hard: int, config=None) -> dict:
    """Writes <out_dir>/{train,heldout,hard}.jsonl and returns {split: path}."""
    paths = {}
    for name, rows in make_splits(seed, n_train, n_heldout, n_hard, config).items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], rows)
    return paths
