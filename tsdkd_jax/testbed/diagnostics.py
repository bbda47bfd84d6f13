"""Testbed-side diagnostics: distinct final answers among a step's sampled responses (a student collapsing
onto one answer shows as this count falling) and the per-token view of the TSD-KD stage."""

from __future__ import annotations

import os

from tsdkd_jax.eval import answers


def distinct_answers(texts: list[str]) -> dict[str, float]:
    """answers/distinct: how many different `#### N` answers (normalised) the responses give;
    answers/with_answer: the fraction of responses that give one at all."""
    found = [answers.gsm8k_strict(t) for t in texts]
    given = [answers.normalize_number(a) for a in found if a is not None]
    return {
        "answers/distinct": float(len(set(given))),
        "answers/with_answer": len(given) / max(len(texts), 1),
    }


def write_selections(stage_dir: str, heldout_path: str) -> None:
    """<stage_dir>/selections.{html,png} (tsdkd_jax.inspect) on held-out problems, unless already written."""
    if not os.path.exists(os.path.join(stage_dir, "selections.html")):
        from tsdkd_jax import inspect

        inspect.write(stage_dir, prompts_path=heldout_path)
