"""A small ChatML tokenizer trained locally once per session, and helpers to write data files."""

import json

import pytest

from tsdkd_jax import data

_TEXTS = [f"what is {a} plus {b}? the answer is {a + b}." for a in range(20) for b in range(20)]


@pytest.fixture(scope="session")
def chat_tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    data.train_tokenizer(_TEXTS + ["You are a calculator. Be brief."], str(out), vocab_size=300)
    return data.load_tokenizer(str(out))


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(rows, name="rows.jsonl") -> path of a JSON Lines file in tmp_path."""

    def write(rows, name="rows.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    return write
