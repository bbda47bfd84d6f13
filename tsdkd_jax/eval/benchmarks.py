"""The paper's ten benchmarks: dataset, split, fields, prompt format and scorer, pinned in one table.

The paper publishes no harness, so these are our protocol (compare methods under it, not against the
paper's absolute numbers). All prompts are zero-shot, one user turn, rendered with the model's chat template;
the instruction at the end fixes the answer format the scorer reads:

- GSM8K, GSM-Plus: "{question}\\nSolve the problem step by step. End with a final line '#### <number>'."
  scored "gsm8k_flexible" (last number; lm-eval's flexible-extract) — "gsm8k_strict" is one switch away.
- MATH (the MATH-500 subset): "{problem}\\nSolve step by step and put the final answer in \\boxed{}." scored
  "math" (last \\boxed{} vs the gold answer, equivalence by math-verify).
- MMLU-Pro (math), by generation: "{question}\\n\\nA. ...\\nB. ...\\n...\\nThink step by step, then finish
  with 'The answer is (X)'." scored "choice_letter".
- MMLU-STEM, SciQ, by log-likelihood (lm-eval's `acc`): context "{question}\\nAnswer:" (SciQ: "{support}\\n
  Question: {question}\\nAnswer:"), continuations " {option}" — no chat template.
- MBPP: "{text}\\nYour code should pass these tests:\\n{tests}\\nWrite the Python function in a ```python
  code block." scored "code" (sandboxed run of the asserts).
- BBH, MuSR, IFEval: lm-eval tasks through the bridge (`harness`): bbh (3-shot CoT), leaderboard_musr,
  ifeval — their scorers are lm-eval's, not ours.

`load_examples(name)` reads the hub dataset (online) or, with `path=`, a local .json/.jsonl/.parquet file or
folder with the same fields, and returns canonical examples {id, prompt, gold, [choices], [tests, test_setup]}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from tsdkd_jax.data.source import read_rows
from tsdkd_jax.eval.answers import LETTERS

Row = Mapping[str, Any]

MMLU_STEM = [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "electrical_engineering",
    "elementary_mathematics",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_mathematics",
    "high_school_physics",
    "high_school_statistics",
    "machine_learning",
]  # lm-eval's mmlu_stem group


def _numeric(row: Row, q: str, a: str) -> dict:
    prompt = f"{row[q]}\nSolve the problem step by step. End with a final line '#### <number>'."
    return {"prompt": prompt, "gold": str(row[a])}


def _math(row: Row) -> dict:
    prompt = f"{row['problem']}\nSolve step by step and put the final answer in \\boxed{{}}."
    return {"prompt": prompt, "gold": str(row["answer"])}


def _mmlu_pro(row: Row) -> dict:
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(row["options"]))
    prompt = f"{row['question']}\n\n{options}\nThink step by step, then finish with 'The answer is (X)'."
    return {"prompt": prompt, "gold": str(row["answer"]), "choices": list(row["options"])}


def _mmlu(row: Row) -> dict:
    return {
        "prompt": f"{row['question'].strip()}\nAnswer:",
        "gold": int(row["answer"]),
        "choices": row["choices"],
    }


def _sciq(row: Row) -> dict:
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    prompt = f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    return {"prompt": prompt, "gold": 3, "choices": choices}


def _mbpp(row: Row) -> dict:
    tests = list(row["test_list"])
    prompt = (
        f"{row['text']}\nYour code should pass these tests:\n"
        + "\n".join(tests)
        + "\nWrite the Python function in a ```python code block."
    )
    return {
        "prompt": prompt,
        "gold": row.get("code", ""),
        "tests": tests,
        "test_setup": row.get("test_setup_code", ""),
    }


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    hf_path: str  # hub dataset
    hf_subset: str  # its configuration ("" = default)
    split: str
    fields: tuple[str, ...]  # the columns `to_example` reads (a local file needs the same)
    to_example: Callable[[Row], dict] | None  # row → {prompt, gold, ...}; None: scored by lm-eval
    scorer: str  # a scorers.SCORERS name, "loglikelihood" (evaluate_choices), or "lm_eval"
    keep: Callable[[Row], bool] | None = None  # row filter (subject / category subsets)
    lm_eval_task: str = ""  # the lm-eval task that runs it through the bridge
    max_new_tokens: int = 512


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("gsm8k", "openai/gsm8k", "main", "test", ("question", "answer"),
                  lambda r: _numeric(r, "question", "answer"), "gsm8k_flexible", lm_eval_task="gsm8k"),
        Benchmark("gsm_plus", "qintongli/GSM-Plus", "", "test", ("question", "answer"),
                  lambda r: _numeric(r, "question", "answer"), "gsm8k_flexible",
                  keep=lambda r: str(r["answer"]).strip() not in ("", "None")),
        Benchmark("math", "HuggingFaceH4/MATH-500", "", "test", ("problem", "answer"), _math, "math",
                  max_new_tokens=1024),
        Benchmark("mmlu_pro_math", "TIGER-Lab/MMLU-Pro", "", "test", ("question", "options", "answer", "category"),
                  _mmlu_pro, "choice_letter", keep=lambda r: r["category"] == "math", max_new_tokens=1024),
        Benchmark("mmlu_stem", "cais/mmlu", "all", "test", ("question", "choices", "answer", "subject"), _mmlu,
                  "loglikelihood", keep=lambda r: r["subject"] in MMLU_STEM, lm_eval_task="mmlu_stem"),
        Benchmark("sciq", "allenai/sciq", "", "test",
                  ("question", "support", "correct_answer", "distractor1", "distractor2", "distractor3"),
                  _sciq, "loglikelihood", lm_eval_task="sciq"),
        Benchmark("mbpp", "google-research-datasets/mbpp", "full", "test", ("text", "test_list"), _mbpp, "code"),
        Benchmark("bbh", "lukaemon/bbh", "", "test", (), None, "lm_eval", lm_eval_task="bbh"),
        Benchmark("musr", "TAUR-Lab/MuSR", "", "murder_mysteries,object_placements,team_allocation", (), None, "lm_eval", lm_eval_task="leaderboard_musr"),
        Benchmark("ifeval", "google/IFEval", "", "train", (), None, "lm_eval", lm_eval_task="ifeval"),
    )
}  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def load_examples(name: str, *, path: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Canonical examples of a native benchmark, from the hub (online) or a local file with the same fields."""
    b = get_benchmark(name)
    if b.to_example is None:
        raise ValueError(
            f"{name} is scored by lm-eval: run task {b.lm_eval_task!r} through tsdkd_jax.eval.harness"
        )
    rows = read_rows(path or b.hf_path, subset="" if path else b.hf_subset, split=b.split)
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in b.fields if f not in row]
        if missing:
            raise ValueError(f"{rows.name}: row {i} lacks field(s) {missing} that {name} needs")
        if b.keep is not None and not b.keep(row):
            continue
        out.append({"id": row.get("id", i), **b.to_example(row)})
        if limit and len(out) == limit:
            break
    return out
