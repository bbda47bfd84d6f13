"""Write a tiny transformers model as a GGUF file the way llama.cpp's converter does (for the GGUF tests).

The conventions written here are llama.cpp's: Gemma norms stored as w + 1, Llama Q/K rows interleaved per
head (the converter's `permute`), tensor names `blk.{i}.*`. transformers' own GGUF loader reads the file
back as the independent reference.
"""

from __future__ import annotations

import gguf
import numpy as np

from tsdkd_jax.weights.gguf import gguf_name

ARCH = {"gemma3_text": "gemma3", "llama": "llama", "qwen2": "qwen2"}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K permutation: each head's rows [first half, second half] → interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write(model, path, qtypes: dict[str, gguf.GGMLQuantizationType] | None = None, raw: dict | None = None):
    """`model` (a transformers CausalLM) → GGUF at `path`. qtypes: GGUF name → quantisation of that tensor;
    raw: GGUF name → (uint8 bytes, type) written as they are (for types the gguf package cannot make)."""
    cfg = model.config
    arch = ARCH[cfg.model_type]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_embedding_length(cfg.hidden_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = (cfg.rope_parameters.get("full_attention") or cfg.rope_parameters)["rope_theta"]
    w.add_rope_freq_base(theta)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    w.add_vocab_size(cfg.vocab_size)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    sandwich = cfg.model_type.startswith("gemma")
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        name = gguf_name(hf_name, sandwich)
        arr = tensor.detach().numpy().astype(np.float32)
        if sandwich and hf_name.endswith("norm.weight"):
            arr = arr + 1.0
        if cfg.model_type == "llama" and hf_name.endswith("q_proj.weight"):
            arr = _permute(arr, cfg.num_attention_heads)
        if cfg.model_type == "llama" and hf_name.endswith("k_proj.weight"):
            arr = _permute(arr, cfg.num_key_value_heads)
        if raw and name in raw:
            data, qtype = raw[name]
            w.add_tensor(name, data, raw_dtype=qtype)
        elif qtypes and name in qtypes:
            w.add_tensor(name, gguf.quants.quantize(arr, qtypes[name]), raw_dtype=qtypes[name])
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
