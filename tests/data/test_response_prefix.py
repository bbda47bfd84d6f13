"""data.response_prefix_field: a written-but-not-trained start of the answer goes on the prompt side."""

import numpy as np
import pytest

from tsdkd_jax import data


def _cfg(path, **kw):
    cfg = data.default_config()
    cfg.path = path
    cfg.update(kw)
    return cfg


def test_prefix_is_attended_but_outside_the_response_mask(chat_tokenizer, write_jsonl):
    tok = chat_tokenizer
    rows = [
        {"prompt": "what is 2 plus 3?", "prefix": "2 plus 3 is 6\n", "cont": "so 5"},
        {"prompt": "what is 1 plus 1?", "prefix": "", "cont": "2"},
        {"prompt": "what is 4 plus 4?", "cont": "8"},  # no prefix column at all
    ]
    cfg = _cfg(write_jsonl(rows), response_field="cont", response_prefix_field="prefix", max_response_len=8)
    train, _, stats = data.load_prompt_data(cfg, tok)
    assert stats["kept"] == 3 and stats["bad"] == 0
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for row, p, r in zip(rows, train.prompts, train.responses):
        header = f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n"
        assert tok.decode(p) == header + row.get("prefix", "")
        assert tok.decode(r) == row["cont"] + "<|im_end|>" and r[-1] == eot
    batch = data.make_batch(train, [0], prompt_len=64, response_len=8, pad_id=tok.pad_token_id)
    n_prefix = len(tok(rows[0]["prefix"], add_special_tokens=False)["input_ids"])
    assert batch["prompt_mask"][0].sum() == len(train.prompts[0])
    assert batch["prompt_mask"][0].sum() > n_prefix > 0  # the prefix is attended to (prompt side) ...
    assert batch["response_mask"][0].sum() == len(train.responses[0])  # ... and only the rest is trained
    np.testing.assert_array_equal(batch["response_ids"][0, : len(train.responses[0])], train.responses[0])


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"response_prefix_field": "prefix"}, "needs a response_field"),
        ({"response_prefix_field": "cont", "response_field": "cont"}, "must differ"),
    ],
)
def test_prefix_field_config_errors(kw, msg, write_jsonl):
    with pytest.raises(ValueError, match=msg):
        data.validate(_cfg(write_jsonl([{"prompt": "a", "cont": "b"}]), **kw))
