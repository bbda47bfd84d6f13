"""Offline assets for configs/tiny.py: a tokenizer, a random teacher and student, and a prompt file.

Everything is generated from a seed (no network, no torch), written to a temporary folder and renamed into
place, so concurrent builders are safe and a built folder is reused. The teacher is random but deliberately
confident (its unembedding is scaled up), so it is a fixed, learnable target distinct from the student.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
from flax import nnx

from tsdkd_jax.data import tokenizer as tok_lib
from tsdkd_jax.models import Decoder, ModelConfig, save_pretrained

VERSION = 3  # bump when the assets change; part of the folder name
_NAMES = ["ann", "bob", "cy", "dee", "eli", "fay", "gus", "hal"]
_ITEMS = ["apples", "books", "coins", "pens", "shells", "stamps"]


def qwen2_hf_config(*, vocab_size, hidden, layers, heads, kv_heads, head_dim, ffw, eos_id, pad_id) -> dict:
    """A Qwen2-style HF config dict (what config.json holds) for a freshly initialised model."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": ffw,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def new_model(hf_config: dict, seed: int, *, head_scale: float = 1.0, shared_embed: float = 0.0) -> Decoder:
    """A randomly initialised Decoder for `hf_config` (exportable: it carries the HF config).

    head_scale multiplies the unembedding (sharper next-token distributions); shared_embed adds one random
    direction of this scale to every token embedding (next-token distributions that vary less with context).
    """
    model = Decoder(ModelConfig.from_hf(hf_config), rngs=nnx.Rngs(seed))
    if head_scale != 1.0:
        model.lm_head.set_value(model.lm_head.get_value() * head_scale)
    if shared_embed:
        embed = model.embed.get_value()
        direction = np.random.default_rng(seed).standard_normal(embed.shape[1]).astype(np.float32)
        model.embed.set_value(embed + shared_embed * direction)
    return model


def _examples(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = (int(x) for x in rng.integers(0, 20, 2))
        if rng.random() < 0.5:
            prompt, answer = f"{name} has {a} {item} and gets {b} more. how many {item}?", a + b
        else:
            prompt, answer = f"what is {a} plus {b}?", a + b
        rows.append({"prompt": prompt, "response": f"the answer is {answer}."})
    return rows


def asset_paths(
    root: str,
    *,
    num_examples: int = 256,
    vocab_size: int = 384,
    teacher_head_scale: float = 40.0,
    seed: int = 0,
) -> dict[str, str]:
    """Where `build` puts the assets of these settings (nothing is read or written)."""
    final = os.path.join(
        os.path.expanduser(root), f"v{VERSION}-n{num_examples}-v{vocab_size}-h{teacher_head_scale:g}-s{seed}"
    )
    return {
        "tokenizer": os.path.join(final, "tokenizer"),
        "student": os.path.join(final, "student"),
        "teacher": os.path.join(final, "teacher"),
        "data": os.path.join(final, "prompts.jsonl"),
    }


def build(
    root: str,
    *,
    num_examples: int = 256,
    vocab_size: int = 384,
    teacher_head_scale: float = 40.0,
    seed: int = 0,
) -> dict[str, str]:
    """Builds (or reuses) the assets under `root`; returns their paths."""
    root = os.path.expanduser(root)
    paths = asset_paths(
        root,
        num_examples=num_examples,
        vocab_size=vocab_size,
        teacher_head_scale=teacher_head_scale,
        seed=seed,
    )
    final = os.path.dirname(paths["data"])
    if os.path.isfile(os.path.join(final, "READY")):
        return paths
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=root)
    try:
        rows = _examples(num_examples, seed)
        texts = [r["prompt"] for r in rows] + [r["response"] for r in rows]
        tok = tok_lib.train_tokenizer(texts, os.path.join(tmp, "tokenizer"), vocab_size=vocab_size)
        eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
        common = {"vocab_size": vocab_size, "eos_id": eos, "pad_id": pad}
        student = qwen2_hf_config(hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, ffw=64, **common)
        teacher = qwen2_hf_config(hidden=32, layers=3, heads=2, kv_heads=1, head_dim=16, ffw=96, **common)
        models = {
            "student": new_model(student, seed + 1),
            "teacher": new_model(teacher, seed + 2, head_scale=teacher_head_scale, shared_embed=0.1),
        }
        for name, model in models.items():
            out = os.path.join(tmp, name)
            save_pretrained(model, out)
            tok.save_pretrained(out)
        with open(os.path.join(tmp, "prompts.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        open(os.path.join(tmp, "READY"), "w").close()
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: use its copy
            if not os.path.isfile(os.path.join(final, "READY")):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return paths
