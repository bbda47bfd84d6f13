"""Generation + scoring loop and teacher-forced log-likelihoods, against transformers' PyTorch model."""

import json

import numpy as np
import pytest
import torch
import transformers

from tsdkd_jax import data, models
from tsdkd_jax.eval import (
    Verdict,
    accuracy,
    continuation_logprobs,
    encode_prompts,
    evaluate,
    evaluate_choices,
    make_splits,
    wilson_interval,
)


@pytest.fixture(scope="module")
def setup(tiny_folder):
    tok = data.load_tokenizer(tiny_folder)
    model = models.from_pretrained(tiny_folder)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_folder, attn_implementation="eager").eval()
    return tok, model, ref, data.eos_token_ids(tiny_folder, tok)


def _torch_logprobs(ref, ctx, cont):
    ids = torch.tensor([list(ctx) + list(cont)])
    with torch.no_grad():
        logp = torch.log_softmax(ref(input_ids=ids).logits.double(), -1)[0]
    n = len(ctx)
    lp = sum(float(logp[n - 1 + j, t]) for j, t in enumerate(cont))
    greedy = all(int(logp[n - 1 + j].argmax()) == t for j, t in enumerate(cont))
    return lp, greedy


def test_wilson_interval_reference_values():
    # textbook values (Newcombe 1998, Table I): 0/10 -> [0, 0.2775]; 5/10 -> [0.2366, 0.7634]
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(5, 10), (0.2366, 0.7634), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(81, 263), (0.2553, 0.3662), atol=1e-4)
    assert wilson_interval(0, 12)[0] == 0.0 and wilson_interval(12, 12)[1] == 1.0  # exact, not 1e-17
    m = accuracy([1, 0, 1, 1])
    assert m["accuracy"] == 0.75 and m["n"] == 4 and m["ci95_low"] < 0.75 < m["ci95_high"]


def test_continuation_logprobs_match_torch(setup):
    tok, model, ref, _ = setup
    texts = [
        ("Mia has 7 apples.", " Mia buys 5 more."),
        ("12 + 3 =", " 15"),
        ("How many", " cards does Leo have now?"),
    ]
    ctxs = [tok(c, add_special_tokens=False)["input_ids"] for c, _ in texts]
    conts = [tok(x, add_special_tokens=False)["input_ids"] for _, x in texts]
    got = continuation_logprobs(model, ctxs, conts, batch_size=2, pad_token_id=tok.pad_token_id)
    for (lp, greedy), c, x in zip(got, ctxs, conts):
        want_lp, want_greedy = _torch_logprobs(ref, c, x)
        assert lp == pytest.approx(want_lp, rel=1e-4, abs=1e-3)
        assert greedy == want_greedy
    # a greedy continuation is recognised as such
    ctx = ctxs[1]
    with torch.no_grad():
        nxt = int(ref(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
    assert continuation_logprobs(model, [ctx], [[nxt]], pad_token_id=0)[0][1]


def test_evaluate_rows_metrics_and_order(setup, tmp_path):
    tok, model, _, eos = setup
    examples = [dict(r, id=r["id"]) for r in make_splits(0, 1, 5, 1)["heldout"]]
    kw = {"max_new_tokens": 8, "eos_token_ids": eos, "pad_token_id": tok.pad_token_id, "chat": True}
    metrics, rows = evaluate(
        model, examples, tok, scorer="gsm8k_strict", batch_size=2, jsonl_path=str(tmp_path / "e.jsonl"), **kw
    )
    assert set(metrics) == {"accuracy", "ci95_low", "ci95_high", "n", "correct"} and metrics["n"] == 5
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert lines == rows and [r["id"] for r in rows] == [e["id"] for e in examples]
    assert set(rows[0]) >= {"prompt", "output", "extracted", "gold", "correct"}
    # batching and length-sorting do not change which output belongs to which prompt
    _, rows1 = evaluate(model, examples, tok, scorer="gsm8k_strict", batch_size=1, **kw)
    assert [r["output"] for r in rows1] == [r["output"] for r in rows]
    # a scorer that accepts the first two outputs gives 2/5
    accept = {rows[0]["output"], rows[1]["output"]}
    m2, _ = evaluate(
        model, examples, tok, scorer=lambda out, ex: Verdict(out, out in accept), batch_size=2, **kw
    )
    want = sum(r["output"] in accept for r in rows)
    assert m2["correct"] == want and m2["accuracy"] == pytest.approx(want / 5)


def test_sampled_evaluation(setup):
    tok, model, _, eos = setup
    examples = make_splits(0, 1, 3, 1)["heldout"]
    m, rows = evaluate(
        model,
        examples,
        tok,
        scorer="gsm8k_flexible",
        batch_size=4,
        max_new_tokens=6,
        eos_token_ids=eos,
        pad_token_id=tok.pad_token_id,
        num_samples=2,
        temperature=1.0,
        seed=1,
    )
    assert len(rows) == 6 and m["n"] == 3 and [r["sample"] for r in rows[:2]] == [0, 1]
    with pytest.raises(ValueError, match="temperature"):
        evaluate(
            model, examples, tok, scorer="gsm8k_strict", eos_token_ids=eos, pad_token_id=0, num_samples=2
        )


def test_evaluate_choices_picks_max_loglik(setup):
    tok, model, ref, _ = setup
    examples = [
        {"prompt": "Mia has 7 apples. Mia buys 5 more. How many?", "choices": ["12", "2", "35"], "gold": 0},
        {"prompt": "Leo has 9 cards. Leo loses 4.", "choices": ["5", "13"], "gold": "B"},
    ]
    m, rows = evaluate_choices(model, examples, tok, pad_token_id=tok.pad_token_id, batch_size=2)
    for ex, row in zip(examples, rows):
        ctx = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        lls = []
        for c in ex["choices"]:
            whole = tok(ex["prompt"] + " " + c, add_special_tokens=False)["input_ids"]
            lls.append(_torch_logprobs(ref, ctx, whole[len(ctx) :])[0])
        np.testing.assert_allclose(row["loglikelihoods"], lls, rtol=1e-4, atol=1e-3)
        assert row["extracted"] == "ABC"[int(np.argmax(lls))]
    assert m["correct"] == sum(r["correct"] for r in rows)


def test_encode_prompts_chat_vs_raw(setup):
    tok = setup[0]
    raw = encode_prompts(tok, ["hi"], chat=False)[0]
    chat = encode_prompts(tok, ["hi"], chat=True)[0]
    assert tok.decode(chat).startswith("<|im_start|>user\nhi<|im_end|>") and len(chat) > len(raw)
