"""Tiny local benchmark files for the eval command and benchmark-during-training tests (offline).

The GSM8K-format file's golds are built from the tiny student's own greedy outputs: even rows get the number
its answer extractor reads (right), odd rows a number it never writes (wrong), so the expected accuracy is
known without the scorer under test.
"""

import json
import os

from tsdkd_jax import data, models
from tsdkd_jax.eval import load_examples, runner
from tsdkd_jax.eval.answers import gsm8k_flexible

WRONG = "98765"


def tiny_student():
    """The configs/tiny.py student folder and prompt file (built once; shared with the train tests)."""
    from tsdkd_jax.train import tiny

    root = os.environ.setdefault("TSDKD_TINY_DIR", os.path.join("/tmp", "tsdkd_tiny_assets"))
    paths = tiny.build(root, teacher_head_scale=20.0)  # configs/tiny.py's default head scale
    return paths["student"], paths["data"]


def _write(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def gsm8k_file(folder, student, prompts_path, *, n=8, max_new_tokens=16):
    """Writes <folder>/gsm8k.jsonl from the first n tiny prompts; returns (path, expected accuracy)."""
    with open(prompts_path) as f:
        questions = [json.loads(line)["prompt"] for line in f][:n]
    path = os.path.join(folder, "gsm8k.jsonl")
    _write(path, [{"question": q, "answer": "#### 0"} for q in questions])
    prompts = [e["prompt"] for e in load_examples("gsm8k", path=path)]
    tok, model = data.load_tokenizer(student), models.from_pretrained(student)
    eos = data.eos_token_ids(student, tok)
    outputs = runner.generate_texts(
        model, runner.encode_prompts(tok, prompts), tok, batch_size=n, max_new_tokens=max_new_tokens,
        eos_token_ids=eos, pad_token_id=data.resolve_pad_id(-1, tok, eos),
    )  # fmt: skip
    golds = [(gsm8k_flexible(o) or WRONG) if i % 2 == 0 else WRONG for i, o in enumerate(outputs)]
    assert not any(WRONG in o for o in outputs)
    right = sum(1 for i, o in enumerate(outputs) if i % 2 == 0 and gsm8k_flexible(o) is not None)
    _write(path, [{"question": q, "answer": f"#### {g}"} for q, g in zip(questions, golds)])
    return path, right / n


def sciq_file(folder, n=4):
    """<folder>/sciq.jsonl: n four-option questions in SciQ's fields."""
    rows = [{"question": f"what is {i} plus 1?", "support": "", "correct_answer": str(i + 1),
             "distractor1": str(i), "distractor2": str(i + 2), "distractor3": "ann"} for i in range(n)]  # fmt: skip
    path = os.path.join(folder, "sciq.jsonl")
    _write(path, rows)
    return path
