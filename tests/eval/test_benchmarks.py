"""Benchmark registry: the ten benchmarks, local files with the hub's fields, prompts and scorers."""

import json

import pytest

from tsdkd_jax.eval import BENCHMARKS, get_scorer, load_examples

ROWS = {
    "gsm8k": {"question": "Tom has 3 pens and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"},
    "gsm_plus": {"question": "Tom has 3 pens and buys 2. How many?", "answer": "5"},
    "math": {"problem": "What is $1/2$ as a fraction?", "solution": "...", "answer": "\\frac{1}{2}"},
    "mmlu_pro_math": {"question": "2+2?", "options": ["3", "4", "5"], "answer": "B", "category": "math"},
    "mmlu_stem": {
        "question": "2+2?",
        "choices": ["3", "4", "5", "6"],
        "answer": 1,
        "subject": "college_mathematics",
    },
    "sciq": {
        "question": "Q?",
        "support": "S.",
        "correct_answer": "c",
        "distractor1": "a",
        "distractor2": "b",
        "distractor3": "d",
    },
    "mbpp": {
        "text": "Add two numbers.",
        "code": "def add(a, b):\n    return a + b",
        "test_list": ["assert add(1, 2) == 3"],
        "test_setup_code": "",
    },
}
GOOD = {
    "gsm8k": "3 + 2 = 5\n#### 5",
    "gsm_plus": "so 5.",
    "math": "\\boxed{0.5}",
    "mmlu_pro_math": "The answer is (B).",
    "mbpp": "```python\ndef add(a, b):\n    return a + b\n```",
}


def test_ten_benchmarks():
    assert sorted(BENCHMARKS) == sorted(
        ["gsm8k", "gsm_plus", "math", "mmlu_pro_math", "mmlu_stem", "sciq", "mbpp", "bbh", "musr", "ifeval"]
    )
    for b in BENCHMARKS.values():
        assert b.hf_path.count("/") == 1
        if b.scorer == "lm_eval":
            assert b.to_example is None and b.lm_eval_task
        elif b.scorer != "loglikelihood":
            get_scorer(b.scorer)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_local_file_loads_and_scores(name, tmp_path):
    path = tmp_path / f"{name}.jsonl"
    other = dict(ROWS[name], subject="history", category="law")  # filtered out by MMLU-STEM / MMLU-Pro-math
    path.write_text(json.dumps(ROWS[name]) + "\n" + json.dumps(other) + "\n")
    examples = load_examples(name, path=str(path))
    keeps_all = name not in ("mmlu_stem", "mmlu_pro_math")
    assert len(examples) == (2 if keeps_all else 1)
    ex = examples[0]
    assert ex["prompt"] and "gold" in ex
    b = BENCHMARKS[name]
    if b.scorer == "loglikelihood":
        assert len(ex["choices"]) == 4 and 0 <= int(ex["gold"]) < 4
        assert ex["prompt"].endswith("Answer:")
    else:
        assert get_scorer(b.scorer)(GOOD[name], ex).correct
        assert not get_scorer(b.scorer)("nothing useful", ex).correct


def test_missing_field_and_bridge_only(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="lacks field"):
        load_examples("gsm8k", path=str(path))
    with pytest.raises(ValueError, match="ifeval"):
        load_examples("ifeval", path=str(path))
