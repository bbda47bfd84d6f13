"""A tiny random Qwen2 (transformers, saved as an HF folder) with a locally trained tokenizer in the same
folder: loadable by our `models.from_pretrained`, by the lm-eval bridge, and by torch as the reference."""

import pytest


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    import torch
    import transformers

    from tsdkd_jax import data
    from tsdkd_jax.eval import testbed_problems

    out = str(tmp_path_factory.mktemp("tiny_eval_model"))
    rows = testbed_problems.make_splits(0, 300, 10, 10)["train"]
    texts = [r["prompt"] + "\n" + r["response"] for r in rows] + ["Question: Answer: A B C D yes no"] * 5
    tok = data.train_tokenizer(texts, out, vocab_size=300)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # sharper logits than the default init, so greedy outputs vary across prompts
        model.lm_head.weight.mul_(30.0)
    model.save_pretrained(out)
    return out
