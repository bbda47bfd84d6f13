"""GGUF file → HF-named float32 tensors and an HF config dict, without torch.

A GGUF file (llama.cpp's format) carries the weights under its own names (`blk.3.attn_q.weight`), often
block-quantised, and the architecture as metadata (`gemma3.embedding_length`, ...). `GGUFCheckpoint` serves
them under the HF names of `mapping.table`, dequantised with the `gguf` package's NumPy routines, so the HF
loader (`weights.load`) reads a .gguf exactly as it reads a safetensors folder. Two conventions of llama.cpp's
converter are undone here (both checked numerically against transformers' own GGUF loading):
  - Gemma norms: HF scales by (1 + w); the GGUF stores w + 1 (llama.cpp multiplies by the weight as is).
  - Llama Q/K: the converter interleaves each head's rotary halves (rows [h0 h_{d/2} h1 ...]); HF keeps them
    split, so the rows are un-permuted.
Architectures: gemma3 (the text model), gemma2, llama, qwen2, qwen3.
"""

from __future__ import annotations

import functools
import os

import numpy as np

# GGUF architecture → HF model_type.
ARCHITECTURES = {
    "gemma3": "gemma3_text",
    "gemma2": "gemma2",
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}

# HF tensor name (after "model.layers.{i}." for layer tensors) → GGUF name (after "blk.{i}.").
_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def find_gguf(path: str) -> str | None:
    """`path` itself if it is a .gguf file; the single .gguf inside a folder without config.json; else None."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path if path.endswith(".gguf") else None
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "config.json")):
        return None
    found = sorted(f for f in os.listdir(path) if f.endswith(".gguf"))
    if len(found) > 1:
        raise ValueError(f"{path} holds several .gguf files ({', '.join(found)}); pass the file itself")
    return os.path.join(path, found[0]) if found else None


def gguf_name(hf_name: str, sandwich_norm: bool) -> str:
    """The GGUF tensor name of HF tensor `hf_name`."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    parts = hf_name.split(".")
    if parts[:2] != ["model", "layers"]:
        raise KeyError(f"No GGUF name for tensor {hf_name!r}")
    layer, rest = parts[2], ".".join(parts[3:])
    if rest == "post_attention_layernorm.weight":  # Gemma: post-attention norm; Llama/Qwen: the pre-MLP norm
        rest_gguf = "post_attention_norm.weight" if sandwich_norm else "ffn_norm.weight"
    elif rest in _LAYER_NAMES:
        rest_gguf = _LAYER_NAMES[rest]
    else:
        raise KeyError(f"No GGUF name for tensor {hf_name!r}")
    return f"blk.{layer}.{rest_gguf}"


class GGUFCheckpoint:
    """The CheckpointReader interface (names, shapes, reads) over a GGUF file, in HF names and layouts."""

    def __init__(self, path: str):
        import gguf  # optional dependency: only GGUF loading needs it

        self.path = os.fspath(path)
        self.folder = self.path  # for error messages shared with CheckpointReader
        try:
            self._reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError) as e:
            raise ValueError(f"Cannot read GGUF file {self.path} (truncated or corrupt?): {e}") from e
        self.metadata = _metadata(self._reader)
        self.hf_config = hf_config(self.metadata, self._reader, self.path)
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._sandwich = self.hf_config["model_type"] in ("gemma2", "gemma3_text")
        self._read_full = functools.lru_cache(maxsize=1)(self._dequantise)

    def _gguf(self, name: str):
        try:
            return self._tensors.get(gguf_name(name, self._sandwich))
        except KeyError:
            return None

    def file_of(self, name: str) -> str:
        return self.path

    def __contains__(self, name: str) -> bool:
        return self._gguf(name) is not None

    def shape(self, name: str) -> tuple[int, ...]:
        # GGUF lists dimensions fastest-first; NumPy (and HF) order is the reverse.
        return tuple(int(n) for n in reversed(self._gguf(name).shape.tolist()))

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        arr = self._read_full(name)
        return arr[index] if index is not None else arr

    def _dequantise(self, name: str) -> np.ndarray:
        import gguf

        tensor = self._gguf(name)
        qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
        try:
            arr = gguf.quants.dequantize(tensor.data, qtype)
        except NotImplementedError as e:
            raise ValueError(
                f"Tensor {tensor.name!r} in {self.path} has quantisation type {qtype.name}, which the gguf "
                f"package cannot dequantise ({e}); convert the file to another type (e.g. Q8_0, Q4_K, F16)"
            ) from None
        arr = np.asarray(arr, np.float32).reshape(self.shape(name))
        if self._sandwich and name.endswith("norm.weight"):
            arr = arr - 1.0  # GGUF stores Gemma's (1 + w) scale; HF keeps w
        if self.hf_config["model_type"] == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = self.hf_config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
            arr = _unpermute_rotary(arr, heads)
        return arr


def _unpermute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head interleave of the rotary halves (rows [x0 y0 x1 y1 ...] → [x0 x1 ... y0 y1 ...])."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            out[key + ".count"] = len(field.data)  # the vocabulary itself is read by the tokenizer converter
            continue
        if key == "tokenizer.ggml.merges":
            continue
        out[key] = field.contents()
    return out


def hf_config(meta: dict, reader, path: str) -> dict:
    """A full HF config dict (transformers' defaults filled in) from the GGUF metadata."""
    from transformers import CONFIG_MAPPING

    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"GGUF file {path} has architecture {arch!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
        )

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    names = {t.name for t in reader.tensors}
    scaling = get("rope.scaling.type")
    if (scaling not in (None, "none")) or "rope_freqs.weight" in names:
        # Llama 3.1+ (rope_freqs) and long-context Gemma 3 (linear) store RoPE scaling we do not map yet
        raise ValueError(
            f"GGUF file {path} uses RoPE scaling ({scaling or 'rope_freqs.weight'}), not supported"
        )
    if "token_embd.weight" not in names:
        raise ValueError(f"GGUF file {path} has no token_embd.weight tensor")
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
    raw = {
        "model_type": ARCHITECTURES[arch],
        "vocab_size": int(embed.shape[-1]),
        "hidden_size": int(get("embedding_length")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": int(get("attention.head_count")),
        "num_key_value_heads": int(get("attention.head_count_kv", get("attention.head_count"))),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(get("context_length", 8192)),
        "tie_word_embeddings": "output.weight" not in names,
        "rope_theta": float(get("rope.freq_base", 10_000.0)),
    }
    if get("attention.key_length") is not None:
        raw["head_dim"] = int(get("attention.key_length"))
    if get("attention.sliding_window") is not None:
        raw["sliding_window"] = int(get("attention.sliding_window"))
    for ours, key in (
        ("attn_logit_softcapping", "attn_logit_softcapping"),
        ("final_logit_softcapping", "final_logit_softcapping"),
    ):
        if get(key) is not None:
            raw[ours] = float(get(key))
    for ours, key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
    ):
        if meta.get(f"tokenizer.ggml.{key}") is not None:
            raw[ours] = int(meta[f"tokenizer.ggml.{key}"])
    config = CONFIG_MAPPING[raw["model_type"]].from_dict(raw).to_dict()
    config["architectures"] = [_ARCH_CLASSES[raw["model_type"]]]
    return config


_ARCH_CLASSES = {
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def load_tokenizer(path: str):
    """The tokenizer transformers builds from the GGUF vocabulary (no torch needed; ~20 s for 262k tokens)."""
    import transformers

    path = os.fspath(path)
    return transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(path) or ".", gguf_file=os.path.basename(path)
    )
