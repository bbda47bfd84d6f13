"""The `config.data` section: where prompts come from, how they are filtered, split, batched and sharded."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

LOCAL_FORMATS = (".json", ".jsonl", ".parquet")
PROMPT_BUCKETS = ("multiple", "pow2", "max")


def default_config() -> ml_collections.ConfigDict:
    """The data section with its defaults; experiment configs override fields, `validate` checks them."""
    c = ml_collections.ConfigDict()
    c.path = ""  # hub dataset name ("org/name", online) or local .json/.jsonl/.parquet file or folder
    c.subset = ""  # hub dataset configuration name ("" = the default one); unused for local files
    c.split = "train"  # hub split; a local file or folder is a single split
    # column with a list of {role, content} turns (set this OR prompt_field); a trailing assistant turn is
    # never part of the prompt, which always ends with the assistant header
    c.messages_field = ""
    c.prompt_field = "prompt"  # column with the prompt text (one user turn), e.g. "instruction"
    c.system_field = ""  # optional column with a system message (text prompts only; empty/absent = none)
    c.response_field = ""  # optional response column ("" = none); = messages_field: the last assistant turn
    # optional column with the start of the assistant's answer, written but not trained on: its tokens go
    # after the assistant header on the prompt side (attended to, no loss); "" or absent in a row = none
    c.response_prefix_field = ""
    c.max_prompt_len = 512  # prompt tokens incl. the chat template; longer prompts are dropped and counted
    c.max_response_len = 256  # response tokens incl. the end-of-turn token; padded to this length
    c.truncate_responses = False  # over-long responses: False = drop the row, True = cut (then no EOS)
    c.max_bad_fraction = 0.01  # fail if more than this fraction of rows have missing/empty/non-text fields
    c.max_examples = 0  # use only the first N rows of the source (0 = all); for smoke runs
    c.holdout_size = 0  # held-out examples (fixed by holdout_seed, never trained on); or use holdout_fraction
    c.holdout_fraction = 0.0  # held-out fraction of the kept examples; at most one of the two is non-zero
    c.holdout_seed = 0  # seed of the held-out split, independent of the shuffle seed
    c.seed = 0  # shuffle seed: epoch e's order is a permutation drawn from (seed, e)
    c.batch_size = 8  # global prompts per step, split evenly over processes
    c.prompt_bucket = "multiple"  # prompt padding length: "multiple" of bucket_multiple, "pow2", or "max"
    c.bucket_multiple = 64  # rounding unit for prompt_bucket="multiple"
    c.pad_id = -1  # pad token id (-1 = the tokenizer's pad token, else its first EOS id)
    return c


_INT_FIELDS = (
    "max_prompt_len",
    "max_response_len",
    "max_examples",
    "holdout_size",
    "holdout_seed",
    "seed",
    "batch_size",
    "bucket_multiple",
    "pad_id",
)
_STR_FIELDS = (
    "path",
    "subset",
    "split",
    "messages_field",
    "prompt_field",
    "system_field",
    "response_field",
    "response_prefix_field",
    "prompt_bucket",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def looks_local(path: str) -> bool:
    """Whether `path` names a local file/folder (existing or not) rather than a hub dataset name."""
    return (
        os.path.exists(path)
        or path.startswith((os.path.sep, ".", "~"))
        or path.endswith(LOCAL_FORMATS)
        or path.count("/") > 1
    )


def validate(config: Mapping[str, Any], *, process_count: int = 1) -> None:
    """Raises ValueError naming the `data.<field>` at fault (wrong types too, so that callers catch one
    error type for every config mistake); FileNotFoundError for a local path that does not exist."""
    cfg = _with_types_checked(dict(config))
    _check_source(cfg)
    _check_ranges(cfg, process_count)


def _with_types_checked(cfg: dict) -> dict:
    """The config with every default filled in, after rejecting unknown fields and wrong types."""
    known = default_config()
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        hints = [
            f"data.{k}"
            + (f" (did you mean data.{m[0]}?)" if (m := difflib.get_close_matches(k, list(known), 1)) else "")
            for k in unknown
        ]
        raise ValueError(f"unknown field(s): {', '.join(hints)}")
    cfg = {**known.to_dict(), **cfg}
    for k in _INT_FIELDS:
        if not _is_int(cfg[k]):
            raise ValueError(f"data.{k} must be an int, got {cfg[k]!r}")
    for k in _STR_FIELDS:
        if not isinstance(cfg[k], str):
            raise ValueError(f"data.{k} must be a string, got {cfg[k]!r}")  # noqa: TRY004 (one error type)
    flag = cfg["truncate_responses"]
    if not isinstance(flag, bool):
        raise ValueError(f"data.truncate_responses must be a bool, got {flag!r}")  # noqa: TRY004
    for k in ("max_bad_fraction", "holdout_fraction"):
        if not _is_number(cfg[k]):
            raise ValueError(f"data.{k} must be a number, got {cfg[k]!r}")
    return cfg


def _check_source(cfg: dict) -> None:
    """The data set's path and which of its fields hold prompts, systems and responses."""
    if not cfg["path"]:
        raise ValueError("data.path is empty: give a hub dataset name or a local .json/.jsonl/.parquet path")
    path = os.path.expanduser(cfg["path"])
    if looks_local(cfg["path"]) and not os.path.exists(path):
        raise FileNotFoundError(f"data.path={cfg['path']!r}: no such file or folder")
    if bool(cfg["messages_field"]) == bool(cfg["prompt_field"]):
        raise ValueError(
            "set exactly one of data.messages_field (chat turns) and data.prompt_field (prompt text); got "
            f"messages_field={cfg['messages_field']!r}, prompt_field={cfg['prompt_field']!r}"
        )
    if cfg["system_field"] and cfg["messages_field"]:
        raise ValueError(
            "data.system_field applies to text prompts only; put the system turn in the messages"
        )
    if cfg["response_field"] and cfg["response_field"] in (cfg["prompt_field"], cfg["system_field"]):
        raise ValueError(f"data.response_field={cfg['response_field']!r} is also the prompt/system field")
    prefix = cfg["response_prefix_field"]
    if prefix and (not cfg["response_field"] or prefix in (cfg["response_field"], cfg["prompt_field"])):
        raise ValueError(
            f"data.response_prefix_field={prefix!r} needs a response_field and must differ from it and from "
            "prompt_field"
        )


def _check_ranges(cfg: dict, process_count: int) -> None:
    """Lengths, sizes, fractions and the batch over the processes."""
    for k in ("max_prompt_len", "batch_size", "bucket_multiple"):
        if cfg[k] <= 0:
            raise ValueError(f"data.{k} must be positive, got {cfg[k]}")
    if cfg["response_field"] and cfg["max_response_len"] <= 0:
        raise ValueError(
            f"data.max_response_len must be positive with a response field, got {cfg['max_response_len']}"
        )
    for k in ("max_examples", "holdout_size"):
        if cfg[k] < 0:
            raise ValueError(f"data.{k} must be >= 0, got {cfg[k]}")
    if not 0.0 <= cfg["max_bad_fraction"] <= 1.0:
        raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {cfg['max_bad_fraction']}")
    if not 0.0 <= cfg["holdout_fraction"] < 1.0:
        raise ValueError(f"data.holdout_fraction must be in [0, 1), got {cfg['holdout_fraction']}")
    if cfg["holdout_size"] and cfg["holdout_fraction"]:
        raise ValueError("set at most one of data.holdout_size and data.holdout_fraction")
    if cfg["prompt_bucket"] not in PROMPT_BUCKETS:
        raise ValueError(f"data.prompt_bucket must be one of {PROMPT_BUCKETS}, got {cfg['prompt_bucket']!r}")
    if cfg["pad_id"] < -1:
        raise ValueError(f"data.pad_id must be a token id or -1 (from the tokenizer), got {cfg['pad_id']}")
    if not _is_int(process_count) or process_count <= 0:
        raise ValueError(f"process_count must be a positive int, got {process_count!r}")
    if cfg["batch_size"] % process_count:
        raise ValueError(
            f"data.batch_size={cfg['batch_size']} is not divisible by the process count {process_count}"
        )
