"""Testbed assets built locally and cached in the workdir: problem splits, a tokenizer, fresh model folders.

Each asset is written to a temporary folder and renamed into place, so an interrupted build leaves nothing
half-written and a rerun reuses what is there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from tsdkd_jax import data
from tsdkd_jax.eval import testbed_problems
from tsdkd_jax.models import save_pretrained
from tsdkd_jax.train import tiny


def _atomic_dir(final: str, build) -> str:
    """Runs build(tmp_dir) unless `final` exists, then renames tmp_dir to `final`."""
    if os.path.isdir(final):
        return final
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
    try:
        build(tmp)
        os.rename(tmp, final)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def problems(root: str, tb) -> dict[str, str]:
    """<root>/problems/{train,validation,heldout,hard,sft}.jsonl (sft = train + recovery rows)."""
    p = tb.problems
    cfg = testbed_problems.ProblemConfig(
        min_steps=p.min_steps, max_steps=p.max_steps, hard_min_steps=p.hard_min_steps,
        hard_max_steps=p.hard_max_steps, max_value=p.max_value, max_operand=p.max_operand,
        multipliers=tuple(p.multipliers), heldout_fraction=p.heldout_fraction,
        validation_fraction=p.validation_fraction, recovery_fraction=p.recovery_fraction,
    )  # fmt: skip
    out = _atomic_dir(
        os.path.join(root, "problems"),
        lambda tmp: testbed_problems.write_splits(
            tmp, tb.data_seed, p.n_train, p.n_heldout, p.n_hard, cfg, n_validation=p.n_validation
        ),
    )
    names = (*testbed_problems.SPLIT_NAMES, "sft")
    return {name: os.path.join(out, f"{name}.jsonl") for name in names}


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tokenizer(root: str, tb, train_path: str) -> str:
    """<root>/tokenizer: byte-level BPE (ChatML specials) trained on the training problems."""

    def build(tmp):
        rows = read_rows(train_path)
        texts = [r["prompt"] for r in rows] + [r["response"] for r in rows]
        data.train_tokenizer(texts, tmp, vocab_size=tb.vocab_size)

    return _atomic_dir(os.path.join(root, "tokenizer"), build)


def fresh_model(root: str, name: str, shape, tokenizer_dir: str, seed: int) -> str:
    """<root>/<name>: a randomly initialised Qwen2-style model (HF folder with the tokenizer)."""

    def build(tmp):
        tok = data.load_tokenizer(tokenizer_dir)
        hf = tiny.qwen2_hf_config(
            vocab_size=len(tok),
            hidden=shape.hidden,
            layers=shape.layers,
            heads=shape.heads,
            kv_heads=shape.kv_heads,
            head_dim=shape.hidden // shape.heads,
            ffw=shape.ffw,
            eos_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_id=tok.pad_token_id,
        )
        save_pretrained(tiny.new_model(hf, seed), tmp)
        for f in os.listdir(tokenizer_dir):  # copied: re-saving a loaded tokenizer can lose its BPE merges
            shutil.copy(os.path.join(tokenizer_dir, f), tmp)

    return _atomic_dir(os.path.join(root, name), build)
