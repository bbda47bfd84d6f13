"""Tiny random transformers (PyTorch) models for each supported family: the independent reference.

Shared by the models, weights, parallel, sampling and eval tests (importable as ``tiny_hf``: pyproject.toml puts
tests/helpers on pytest's ``pythonpath``).
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

COMMON = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}

FAMILIES = {
    "qwen2_untied": (transformers.Qwen2Config, dict(COMMON, tie_word_embeddings=False)),
    "qwen2_tied": (transformers.Qwen2Config, dict(COMMON, tie_word_embeddings=True, num_key_value_heads=1)),
    "qwen3": (transformers.Qwen3Config, dict(COMMON, head_dim=32, tie_word_embeddings=False)),
    "llama3": (
        transformers.LlamaConfig,
        dict(
            COMMON,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "gemma2": (
        transformers.Gemma2Config,
        dict(
            COMMON,
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
    ),
    "gemma3": (
        transformers.Gemma3TextConfig,
        dict(
            COMMON,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            sliding_window_pattern=2,
            rope_theta=100000.0,
            rope_local_base_freq=1000.0,
            rope_scaling={"rope_type": "linear", "factor": 4.0},
        ),
    ),
}


# Smaller than COMMON, for tests that generate many tokens or train a tokenizer-sized vocabulary.
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


def config(family: str, **overrides) -> transformers.PreTrainedConfig:
    """The family's tiny HF config; ``overrides`` replace its fields."""
    cls, kwargs = FAMILIES[family]
    return cls(**{**kwargs, **overrides})


def build(family: str, seed: int = 0, *, perturb_norms: bool = True, head_scale: float = 1.0, **overrides):
    """A random tiny HF causal LM in float32, eager attention (exact soft-capping), eval mode.

    ``perturb_norms``: random norm scales, so (1 + w) vs w mix-ups cannot hide. ``head_scale``: multiplies the
    (untied) LM head, for sharper next-token distributions.
    """
    torch.manual_seed(seed)
    cfg = config(family, **overrides)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        if perturb_norms:
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
        if head_scale != 1.0:
            model.lm_head.weight.mul_(head_scale)
    return model.eval()


def left_padded_batch(vocab: int, lengths=(12, 9, 5), seed: int = 0):
    """ids [B,T] int32 and mask [B,T] int32 with rows left-padded to the longest length."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), T)).astype(np.int32)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, T - n :] = 1
        ids[b, : T - n] = 0
    return ids, mask


def reference_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HF logits with explicit position_ids = cumsum(mask) - 1 (transformers 5 does not derive them)."""
    ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids_t, attention_mask=mask_t, position_ids=pos).logits.float().numpy()


def rel_l2(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    m = mask.astype(bool)
    a, b = np.asarray(a, np.float64)[m], np.asarray(b, np.float64)[m]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
