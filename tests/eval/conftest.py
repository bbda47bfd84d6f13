"""A tiny random Qwen2 (transformers, saved as an HF folder) with a locally trained tokenizer in the same
folder: loadable by our `models.from_pretrained`, by the lm-eval bridge, and by torch as the reference."""

import pytest


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    import tiny_hf

    from tsdkd_jax import data
    from tsdkd_jax.eval import testbed_problems

    out = str(tmp_path_factory.mktemp("tiny_eval_model"))
    rows = testbed_problems.make_splits(0, 300, 10, 10)["train"]
    texts = [r["prompt"] + "\n" + r["response"] for r in rows] + ["Question: Answer: A B C D yes no"] * 5
    tok = data.train_tokenizer(texts, out, vocab_size=300)
    # head_scale: sharper logits than the default init, so greedy outputs vary across prompts
    model = tiny_hf.build(
        "qwen2_untied",
        perturb_norms=False,
        head_scale=30.0,
        **tiny_hf.SMALL,
        vocab_size=len(tok),
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(out)
    return out
