"""Answer extraction from generated text: GSM8K numbers, MATH `\\boxed{}`, multiple-choice letters, code.

GSM8K follows lm-evaluation-harness (`tasks/gsm8k/gsm8k.yaml`): "strict" is the first `#### N`, "flexible" the
last number-like span; both are then normalised like its `exact_match` (drop `,` and `$`, anything up to
`#### `, one trailing `.`, case). On top of that, two normalised numbers are equal when their decimal values are
(`3.50` = `3.5`, `-0` = `0`), which lm-eval's string match would miss; integer answers score identically.
"""

from __future__ import annotations

import decimal
import re

GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
LETTERS = "ABCDEFGHIJ"


def _first_group(match) -> str:
    return next((g for g in match if g), "") if isinstance(match, tuple) else match


def gsm8k_strict(text: str) -> str | None:
    """The number after the first `#### ` (lm-eval's "strict-match" filter), or None."""
    found = GSM8K_STRICT.findall(text)
    return _first_group(found[0]).strip() if found else None


def gsm8k_flexible(text: str) -> str | None:
    """The last number-like span (lm-eval's "flexible-extract" filter), or None."""
    found = GSM8K_FLEXIBLE.findall(text)
    return _first_group(found[-1]).strip() if found else None


def normalize_number(text: str) -> str:
    """lm-eval's GSM8K exact-match normalisation: drop `,`, `$`, a `... #### ` prefix and one trailing `.`."""
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.strip().lower()


def numbers_equal(pred: str | None, gold: str) -> bool:
    """Normalised string equality, or equal decimal values when both sides are numbers."""
    if pred is None:
        return False
    p, g = normalize_number(pred), normalize_number(gold)
    if p == g:
        return True
    try:
        return decimal.Decimal(p) == decimal.Decimal(g)
    except (decimal.InvalidOperation, ValueError):
        return False


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (brace-balanced, nesting allowed), or None.

    `\\boxed 5` (no braces, as some models write) gives the token after the space.
    """
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        rest = text[m.end() :]
        if rest.startswith(" ") and not rest.lstrip().startswith("{"):
            token = rest.split(maxsplit=1)
            return token[0].rstrip("$.") if token else None
        rest = rest.lstrip()
        if not rest.startswith("{"):
            continue
        depth = 0
        for i, ch in enumerate(rest):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return rest[1:i].strip()
        # unbalanced: an earlier, complete box (if any) is the answer
    return None


def choice_letter(text: str, num_choices: int = 4) -> str | None:
    """The chosen option letter: "answer is (X)", "Answer: X", a lone "(X)", or a reply that is just "X"."""
    letters = LETTERS[:num_choices]
    patterns = (
        rf"(?i:answer is):?\s*\(?([{letters}])\)?(?![A-Za-z])",
        rf"(?i:answer):?\s*\(?([{letters}])\)?(?![A-Za-z])",
        rf"\(([{letters}])\)",
        rf"^\s*([{letters}])(?:[.):]|\s*$)",
    )
    for pattern in patterns:
        found = re.findall(pattern, text)
        if found:
            return found[-1]
    return None


def code_block(text: str) -> str:
    """The first fenced code block (```python or ```), else the text before any `[DONE]` marker."""
    m = re.search(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, flags=re.DOTALL)
    if m:
        return m.group(1)
    return text.split("[DONE]", 1)[0]
