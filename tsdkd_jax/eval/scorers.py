"""Scorers: (generated text, example) → Verdict(extracted answer, correct).

An example is a dict with at least "prompt" and "gold"; multiple-choice examples add "choices" (list of
option texts, gold = letter), code examples add "tests" (assert statements) and optionally "test_setup".
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tsdkd_jax.eval import answers
from tsdkd_jax.eval.code_exec import run_tests


@dataclasses.dataclass(frozen=True)
class Verdict:
    extracted: str | None  # the answer read from the output (None: nothing found)
    correct: bool
    detail: str = ""  # why, when not obvious (e.g. "timeout" for code)


Scorer = Callable[[str, Mapping[str, Any]], Verdict]


def gsm8k_gold(gold: Any) -> str:
    """The number in a GSM8K-style gold answer: after `#### ` when present, else the whole text."""
    text = str(gold)
    return text.split("####")[-1].strip()


@dataclasses.dataclass(frozen=True)
class NumericScorer:
    """GSM8K-style: mode "strict" (`#### N`) or "flexible" (last number), lm-eval's normalisation."""

    mode: str = "strict"

    def __post_init__(self):
        if self.mode not in ("strict", "flexible"):
            raise ValueError(f"NumericScorer mode must be 'strict' or 'flexible', got {self.mode!r}")

    def __call__(self, output: str, example: Mapping[str, Any]) -> Verdict:
        extract = answers.gsm8k_strict if self.mode == "strict" else answers.gsm8k_flexible
        pred = extract(output)
        return Verdict(pred, answers.numbers_equal(pred, gsm8k_gold(example["gold"])))


def math_equal(pred: str, gold: str, timeout_s: int = 5) -> bool:
    """Equivalence of two LaTeX answers through math-verify (symbolic and numeric), under a time limit.

    math-verify enforces its limit with SIGALRM, which only the main thread may use; elsewhere it runs
    without one.
    """
    try:
        from math_verify import parse, verify
    except ImportError as e:  # an optional dependency (the `eval` extra)
        raise ImportError("the MATH scorer needs math-verify: pip install 'tsdkd_jax[eval]'") from e
    t = timeout_s if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse(f"${gold}$", parsing_timeout=t)
        p = parse(f"${pred}$", parsing_timeout=t)
        return bool(g and p and verify(g, p, timeout_seconds=t))
    except Exception:  # noqa: BLE001 - a parse/verify failure or timeout is a wrong answer, never a crash
        return False


@dataclasses.dataclass(frozen=True)
class MathScorer:
    """MATH-style: the last `\\boxed{}` of the output vs the gold (its last `\\boxed{}` if it has one)."""

    timeout_s: int = 5

    def __call__(self, output: str, example: Mapping[str, Any]) -> Verdict:
        gold = str(example["gold"])
        gold = answers.last_boxed(gold) or gold
        pred = answers.last_boxed(output)
        if pred is None:
            return Verdict(None, False, "no \\boxed{} answer")
        if pred.strip() == gold.strip():
            return Verdict(pred, True)
        return Verdict(pred, math_equal(pred, gold, self.timeout_s))


@dataclasses.dataclass(frozen=True)
class ChoiceScorer:
    """Multiple choice by generation: the option letter the output names vs the gold letter."""

    def __call__(self, output: str, example: Mapping[str, Any]) -> Verdict:
        n = len(example.get("choices") or answers.LETTERS)
        pred = answers.choice_letter(output, n)
        return Verdict(pred, pred is not None and pred == gold_letter(example["gold"]))


def gold_letter(gold: Any) -> str:
    """A gold option as a letter, from a letter or a 0-based index."""
    if isinstance(gold, int) or (isinstance(gold, str) and gold.isdigit()):
        return answers.LETTERS[int(gold)]
    return str(gold).strip().upper()


@dataclasses.dataclass(frozen=True)
class CodeScorer:
    """MBPP-style: the output's code (first fenced block) must pass every test assert in a sandbox."""

    timeout_s: float = 10.0

    def __call__(self, output: str, example: Mapping[str, Any]) -> Verdict:
        code = answers.code_block(output)
        result = run_tests(
            code, list(example["tests"]), setup=example.get("test_setup") or "", timeout_s=self.timeout_s
        )
        return Verdict(code, result.passed, result.status if not result.detail else result.detail)


SCORERS: dict[str, Callable[[], Scorer]] = {
    "gsm8k_strict": lambda: NumericScorer("strict"),
    "gsm8k_flexible": lambda: NumericScorer("flexible"),
    "math": MathScorer,
    "choice_letter": ChoiceScorer,
    "code": CodeScorer,
}


def get_scorer(name_or_scorer: str | Scorer) -> Scorer:
    """A scorer by name (see SCORERS), or the callable itself."""
    if callable(name_or_scorer):
        return name_or_scorer
    if name_or_scorer not in SCORERS:
        raise ValueError(f"unknown scorer {name_or_scorer!r}; known: {sorted(SCORERS)}")
    return SCORERS[name_or_scorer]()
