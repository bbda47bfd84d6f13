"""`config.data` validation: each error names the field."""

import pytest

from tsdkd_jax import data


def _cfg(tmp_path, **kw):
    (tmp_path / "rows.jsonl").write_text('{"prompt": "hi"}\n')
    cfg = data.default_config()
    cfg.path = str(tmp_path / "rows.jsonl")
    return {**cfg, **kw} if kw else cfg  # a plain dict lets a test set a wrongly typed value


def test_defaults_with_a_path_are_valid(tmp_path):
    data.validate(_cfg(tmp_path), process_count=4)
    data.validate(_cfg(tmp_path, path="org/dataset"))  # a hub name is not checked offline


@pytest.mark.parametrize(
    "overrides, process_count, message",
    [
        ({"batch_size": 6}, 4, "data.batch_size=6 is not divisible by the process count 4"),
        ({"batch_size": 0}, 1, "data.batch_size must be positive, got 0"),
        ({"max_bad_fraction": 1.5}, 1, r"data.max_bad_fraction must be in \[0, 1\], got 1.5"),
        ({"max_bad_fraction": -0.1}, 1, r"data.max_bad_fraction must be in \[0, 1\], got -0.1"),
        ({"path": ""}, 1, "data.path is empty"),
        ({"prompt_field": ""}, 1, "set exactly one of data.messages_field"),
        ({"messages_field": "messages"}, 1, "set exactly one of data.messages_field"),
        ({"messages_field": "m", "prompt_field": "", "system_field": "s"}, 1, "data.system_field applies"),
        ({"response_field": "prompt"}, 1, "data.response_field='prompt' is also the prompt/system field"),
        ({"max_prompt_len": 0}, 1, "data.max_prompt_len must be positive"),
        ({"response_field": "r", "max_response_len": 0}, 1, "data.max_response_len must be positive"),
        (
            {"holdout_size": 4, "holdout_fraction": 0.1},
            1,
            "at most one of data.holdout_size and data.holdout_fraction",
        ),
        ({"holdout_fraction": 1.0}, 1, r"data.holdout_fraction must be in \[0, 1\)"),
        ({"holdout_size": -1}, 1, "data.holdout_size must be >= 0"),
        ({"prompt_bucket": "pow3"}, 1, "data.prompt_bucket must be one of"),
        ({"pad_id": -2}, 1, "data.pad_id must be a token id or -1"),
        ({"batch_size": 8.0}, 1, "data.batch_size must be an int, got 8.0"),
        ({"truncate_responses": 1}, 1, "data.truncate_responses must be a bool"),
        ({"prompt_field": 3}, 1, "data.prompt_field must be a string"),
    ],
)
def test_each_error_names_the_field(tmp_path, overrides, process_count, message):
    with pytest.raises(ValueError, match=message):
        data.validate(_cfg(tmp_path, **overrides), process_count=process_count)


def test_unknown_field_names_suggest_the_known_one(tmp_path):
    cfg = dict(_cfg(tmp_path), promt_field="x", colour="red")
    with pytest.raises(
        ValueError,
        match=r"unknown field\(s\): data.colour, data.promt_field \(did you mean data.prompt_field\?\)",
    ):
        data.validate(cfg)


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path='.*missing.jsonl': no such file or folder"):
        data.validate(_cfg(tmp_path, path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        data.validate(_cfg(tmp_path, path="./no/such/dir"))
