"""Scorers on fixed (generation, gold) pairs: the known extraction traps."""

import pytest

from tsdkd_jax.eval import answers
from tsdkd_jax.eval.scorers import ChoiceScorer, MathScorer, NumericScorer, get_scorer

STRICT, FLEXIBLE = NumericScorer("strict"), NumericScorer("flexible")


@pytest.mark.parametrize(
    "output, gold, strict, flexible",
    [
        ("12 + 1222 = 1234\n#### 1,234", "#### 1234", True, True),  # commas in the answer
        ("She pays $1,234 in total.\n#### 1234", "1,234", True, True),  # commas in the gold
        ("The total is $18.", "18", False, True),  # `$` and a trailing period; no `####` for strict
        ("#### $18", "18", False, True),  # lm-eval's strict regex has no `$`: strict misses it, as there
        ("So the answer is 18.\n#### 18.", "18", True, True),  # trailing period after `#### N`
        ("It drops by 5.\n#### -5", "-5", True, True),  # negative numbers
        ("#### -5", "5", False, False),
        ("half of 7 is 3.5\n#### 3.50", "3.5", True, True),  # decimals compare by value
        ("#### 2.5", "25", False, False),
        ("First 3, then 4, finally 7", "7", False, True),  # flexible takes the last number
        ("#### 7 and later 9", "7", True, False),  # strict takes the first `#### N`
        ("I cannot tell.", "7", False, False),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "Natalia sold 48+24 = 72.\n#### 72", True, True),
    ],
)
def test_gsm8k(output, gold, strict, flexible):
    assert STRICT(output, {"gold": gold}).correct is strict
    assert FLEXIBLE(output, {"gold": gold}).correct is flexible


def test_gsm8k_extracted_is_raw_span():
    assert STRICT("#### 1,234.", {"gold": "1234"}).extracted == "1,234."
    assert FLEXIBLE("pay $5.", {"gold": "5"}).extracted == "$5."
    assert STRICT("no answer", {"gold": "1"}).extracted is None


@pytest.mark.parametrize(
    "text, boxed",
    [
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{1} wait, \boxed{2}", "2"),  # the last box
        (r"\boxed{\frac{a^{2}}{\sqrt{b_{1}}}}", r"\frac{a^{2}}{\sqrt{b_{1}}}"),  # nested braces
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are balanced too
        (r"\boxed{3} then \boxed{4", "3"),  # an unclosed last box falls back to the complete one
        (r"the answer is \boxed 5.", "5"),
        (r"\fbox{x+1}", "x+1"),
        ("no box here", None),
    ],
)
def test_last_boxed(text, boxed):
    assert answers.last_boxed(text) == boxed


@pytest.mark.parametrize(
    "output, gold, correct",
    [
        (r"Thus \boxed{\frac{1}{2}}.", "0.5", True),
        (r"Thus \boxed{0.5}.", r"\frac{1}{2}", True),
        (r"\boxed{\dfrac{2}{4}}", r"The answer is $\boxed{\frac{1}{2}}$.", True),  # gold given as a solution
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", True),
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", False),
        (r"\boxed{x^{2}+2x+1}", r"(x+1)^2", True),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}", True),
        (r"The answer is 0.5", "0.5", False),  # no \boxed{}: not an answer under this protocol
        (r"\boxed{\frac{1}{2", "0.5", False),  # unbalanced
    ],
)
def test_math(output, gold, correct):
    assert MathScorer()(output, {"gold": gold}).correct is correct


@pytest.mark.parametrize(
    "output, letter",
    [
        ("Step by step... The answer is (C).", "C"),
        ("Answer: B", "B"),
        ("the answer is a number; I pick (D)", "D"),  # "is a" is not an option letter
        ("B", "B"),
        ("C. Because it is.", "C"),
        ("(A) looks wrong, (B) is right", "B"),
        ("I do not know", None),
        ("The answer is (J)", None),  # out of range for 4 options
    ],
)
def test_choice_letter(output, letter):
    v = ChoiceScorer()(output, {"gold": 1, "choices": ["w", "x", "y", "z"]})
    assert v.extracted == letter
    assert v.correct is (letter == "B")


def test_get_scorer_names():
    assert isinstance(get_scorer("gsm8k_strict"), NumericScorer)
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("nope")
