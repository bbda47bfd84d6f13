"""Rows → chat-templated token ids, with every dropped or malformed row counted; the held-out split.

Prompt vs response tokens. The prompt is `chat_prompt_ids(tokenizer, turns)`: the chat template rendered with
the generation prompt, so it ends with the assistant header (for ChatML `<|im_start|>assistant\\n`). The
response is the assistant turn's content tokenized on its own (`add_special_tokens=False`) followed by one
end-of-turn id: exactly the tokens the model has to produce after the prompt and where a sampler stops, so a
dataset response and an on-policy sample have the same layout. What a template writes after the end-of-turn
token (ChatML's trailing newline) is not part of the response. The end-of-turn id is the first token the
template puts after an assistant message, when that token is an EOS id (`<|im_end|>`, Gemma's
`<end_of_turn>`, Llama 3's `<|eot_id|>`); otherwise the first EOS id.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import numpy as np

from tsdkd_jax.data.config import default_config, validate
from tsdkd_jax.data.source import INVALID_JSON, Rows, read_rows
from tsdkd_jax.data.tokenizer import chat_prompt_ids, eos_token_ids

log = logging.getLogger(__name__)

_SENTINEL = "\u2063RESPONSE\u2063"


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Tokenized examples: prompts (ending with the assistant header), optional responses, source rows."""

    prompts: list[np.ndarray]  # int32 [len_i] each, len_i <= max_prompt_len
    responses: list[np.ndarray] | None  # int32 [len_i] each: content + end-of-turn id; None = prompts only
    rows: np.ndarray  # int64 [n]: row index in the source, for tracing an example back

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, indices: Sequence[int] | np.ndarray) -> PromptSet:
        idx = [int(i) for i in indices]
        responses = None if self.responses is None else [self.responses[i] for i in idx]
        return PromptSet([self.prompts[i] for i in idx], responses, self.rows[idx])


def end_of_turn_id(tokenizer: Any, eos_ids: Sequence[int]) -> int:
    """The token that closes an assistant turn in `tokenizer`'s chat template (see the module docstring)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        suffix = text.split(_SENTINEL, 1)[1]
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    except (jinja2.TemplateError, IndexError, ValueError):  # a template may reject this chat: use the EOS id
        ids = []
    return int(ids[0]) if ids and ids[0] in eos_ids else int(eos_ids[0])


class _Tally:
    """Counts per (field, reason) with the first row index seen, for stats and error messages."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.first: dict[tuple[str, str], int] = {}

    def add(self, key: tuple[str, str], row: int) -> None:
        self.counts[key] += 1
        self.first.setdefault(key, row)

    def describe(self) -> str:
        return "; ".join(
            f"field {f!r} {r} in {n} row{'s' * (n > 1)} (e.g. row {self.first[(f, r)]})"
            for (f, r), n in sorted(self.counts.items(), key=lambda kv: -kv[1])
        )


def _text(row: Mapping[str, Any], field: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) with reason "missing", "empty" or "not text (<type>)"."""
    v = row.get(field)
    if v is None:
        return None, "missing"
    if not isinstance(v, str):
        return None, f"not text ({type(v).__name__})"
    if not v.strip():
        return None, "empty"
    return v, None


def _turns(row: Mapping[str, Any], field: str) -> tuple[list[dict[str, str]] | None, str | None]:
    v = row.get(field)
    if v is None:
        return None, "missing"
    if not isinstance(v, list) or not all(isinstance(t, Mapping) for t in v):
        return None, f"not a list of {{role, content}} turns ({type(v).__name__})"
    if not v:
        return None, "empty"
    turns = []
    for t in v:
        role, content = t.get("role"), t.get("content")
        if not isinstance(role, str) or not role or content is None:
            return None, "has a turn without role or content"
        if not isinstance(content, str):
            return None, f"has a turn whose content is not text ({type(content).__name__})"
        if not content.strip():
            return None, "has an empty turn"
        turns.append({"role": role, "content": content})
    return turns, None


def _parse(
    row: Any, cfg: Mapping[str, Any]
) -> tuple[list[dict[str, str]], str | None, tuple[str, str] | None]:
    """(prompt turns, response text or None, None) or ([], None, (field, reason)) for a bad row."""
    if not isinstance(row, Mapping):
        return [], None, ("<row>", f"is not an object ({type(row).__name__})")
    if INVALID_JSON in row:
        return [], None, ("<row>", "is not valid JSON")
    response = None
    if cfg["messages_field"]:
        field = cfg["messages_field"]
        turns, why = _turns(row, field)
        if why:
            return [], None, (field, why)
        if turns[-1]["role"] == "assistant":  # a trailing answer is the response, never part of the prompt
            last = turns.pop()
            if cfg["response_field"] == field:
                response = last["content"]
        if not turns:
            return [], None, (field, "has no turn before the assistant's")
        if cfg["response_field"] == field and response is None:
            return [], None, (field, "has no final assistant turn (the response)")
    else:
        text, why = _text(row, cfg["prompt_field"])
        if why:
            return [], None, (cfg["prompt_field"], why)
        turns = [{"role": "user", "content": text}]
        if cfg["system_field"] and row.get(cfg["system_field"]) is not None:
            system, why = _text(row, cfg["system_field"])
            if why and why != "empty":  # an empty system message means none
                return [], None, (cfg["system_field"], why)
            if system:
                turns.insert(0, {"role": "system", "content": system})
    if cfg["response_field"] and response is None:
        response, why = _text(row, cfg["response_field"])
        if why:
            return [], None, (cfg["response_field"], why)
    return turns, response, None


def tokenize_rows(
    rows: Rows, tokenizer: Any, cfg: Mapping[str, Any], *, eos_ids: Sequence[int]
) -> tuple[PromptSet, dict[str, Any]]:
    """Parses, templates, tokenizes and filters every row; raises ValueError above `max_bad_fraction`."""
    with_response = bool(cfg["response_field"])
    eot = end_of_turn_id(tokenizer, eos_ids) if with_response else -1
    bad, dropped = _Tally(), _Tally()
    prompts, responses, kept_rows = [], [], []
    truncated = 0
    for i, row in enumerate(rows):
        turns, response, why = _parse(row, cfg)
        if why:
            bad.add(why, i)
            continue
        prompt = chat_prompt_ids(tokenizer, turns)
        prefix_field = cfg.get("response_prefix_field", "")
        prefix = row.get(prefix_field) if prefix_field else None
        if prefix:  # the answer's start, written but not trained on: after the assistant header
            if not isinstance(prefix, str):
                bad.add((prefix_field, f"not text ({type(prefix).__name__})"), i)
                continue
            prompt = prompt + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        prompt = np.asarray(prompt, np.int32)
        if len(prompt) > cfg["max_prompt_len"]:
            dropped.add(("prompt", f"longer than data.max_prompt_len={cfg['max_prompt_len']}"), i)
            continue
        if with_response:
            ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [eot]
            if len(ids) > cfg["max_response_len"]:
                if not cfg["truncate_responses"]:
                    dropped.add(
                        ("response", f"longer than data.max_response_len={cfg['max_response_len']}"), i
                    )
                    continue
                ids, truncated = ids[: cfg["max_response_len"]], truncated + 1
            responses.append(np.asarray(ids, np.int32))
        prompts.append(prompt)
        kept_rows.append(i)

    stats = _tally_stats(rows, cfg, bad, dropped, truncated, n_kept=len(prompts))
    examples = PromptSet(prompts, responses if with_response else None, np.asarray(kept_rows, np.int64))
    return examples, stats


def _tally_stats(rows: Rows, cfg: Mapping[str, Any], bad, dropped, truncated: int, *, n_kept: int) -> dict:
    """The data set's statistics; raises when too many rows are bad or none is usable; logs what was left
    out."""
    n, n_bad = len(rows), sum(bad.counts.values())
    if n == 0:
        raise ValueError(f"{rows.name}: the data source has no rows")
    if n_bad / n > cfg["max_bad_fraction"]:
        raise ValueError(
            f"{rows.name}: {n_bad} of {n} rows ({n_bad / n:.1%}) are bad, more than "
            f"data.max_bad_fraction={cfg['max_bad_fraction']}: {bad.describe()}"
        )
    if not n_kept:
        why = "; ".join(filter(None, [bad.describe(), dropped.describe()]))
        raise ValueError(f"{rows.name}: no usable rows out of {n}: {why}")
    stats: dict[str, Any] = {"source": rows.name, "rows": n, "kept": n_kept, "bad": n_bad}
    stats.update({f"bad/{f}/{r}": c for (f, r), c in sorted(bad.counts.items())})
    stats["dropped/prompt_too_long"] = sum(c for (f, _), c in dropped.counts.items() if f == "prompt")
    stats["dropped/response_too_long"] = sum(c for (f, _), c in dropped.counts.items() if f == "response")
    stats["truncated/response"] = truncated
    if n_bad or dropped.counts or truncated:
        log.warning(
            "%s: skipped %d bad rows (%s); dropped %d (%s); truncated %d responses",
            rows.name,
            n_bad,
            bad.describe() or "-",
            sum(dropped.counts.values()),
            dropped.describe() or "-",
            truncated,
        )
    return stats


def _row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """A splitmix64 hash of (seed, row): a fixed pseudo-random rank for each source row."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_holdout(examples: PromptSet, size: int, seed: int) -> tuple[PromptSet, PromptSet]:
    """(train, held-out). The held-out examples are the `size` kept rows with the smallest hash of
    (seed, source row index): the split ignores the shuffle seed, and filtering out a training row leaves
    the held-out set as it was. Both parts keep source order."""
    if size >= len(examples):
        raise ValueError(f"held-out size {size} leaves no training examples out of {len(examples)}")
    held = np.sort(np.argsort(_row_keys(examples.rows, seed), kind="stable")[:size])
    mask = np.ones(len(examples), bool)
    mask[held] = False
    return examples.select(np.flatnonzero(mask)), examples.select(held)


def resolve_pad_id(pad_id: int, tokenizer: Any, eos_ids: Sequence[int]) -> int:
    """`data.pad_id` when set (>= 0), else the tokenizer's pad token, else its first EOS id."""
    if pad_id >= 0:
        return pad_id
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else int(eos_ids[0])


def load_prompt_data(
    config: Mapping[str, Any], tokenizer: Any, *, eos_ids: Sequence[int] | None = None, process_count: int = 1
) -> tuple[PromptSet, PromptSet, dict[str, Any]]:
    """Validates `config.data`, reads, tokenizes and filters the rows, and splits off the held-out set.

    Returns (train, heldout, stats); stats is a flat JSON-able dict of counts (rows, kept, bad/<field>/<why>,
    dropped/..., truncated/response, train, heldout) that is also logged.
    """
    validate(config, process_count=process_count)
    cfg = {**default_config().to_dict(), **dict(config)}
    if eos_ids is None:
        eos_ids = eos_token_ids(None, tokenizer)
    rows = read_rows(cfg["path"], subset=cfg["subset"], split=cfg["split"], max_rows=cfg["max_examples"])
    examples, stats = tokenize_rows(rows, tokenizer, cfg, eos_ids=eos_ids)
    size = cfg["holdout_size"] or round(cfg["holdout_fraction"] * len(examples))
    train, heldout = split_holdout(examples, size, cfg["holdout_seed"])
    stats.update(train=len(train), heldout=len(heldout))
    log.info("data %s", stats)
    return train, heldout, stats
