"""Shapes known offline: the paper's models (their HF config.json values) and accelerator memory sizes.

A model path that is not a local HF folder is looked up here by its last path component (case-insensitive),
so `~/models/Qwen2.5-14B-Instruct` or `Qwen/Qwen2.5-14B-Instruct` plan without the weights or the network.
"""

from __future__ import annotations

import os

from tsdkd_jax.models import ModelConfig

GIB = 1 << 30

# config.json fields that shape memory (values from the models' published config.json files).
_QWEN25 = {"model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "max_position_embeddings": 32768, "use_sliding_window": False}  # fmt: skip
_QWEN3 = {"model_type": "qwen3", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1e6,
          "max_position_embeddings": 40960, "head_dim": 128}  # fmt: skip
_GEMMA2 = {"model_type": "gemma2", "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
           "rope_theta": 10000.0, "max_position_embeddings": 8192, "head_dim": 256, "sliding_window": 4096,
           "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
           "vocab_size": 256000, "tie_word_embeddings": True}  # fmt: skip


def _shape(hidden, layers, heads, kv_heads, ffw, vocab=None, tie=None):
    out = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "intermediate_size": ffw}  # fmt: skip
    if vocab is not None:
        out["vocab_size"] = vocab
    if tie is not None:
        out["tie_word_embeddings"] = tie
    return out


MODEL_PRESETS: dict[str, dict] = {
    "Qwen2.5-14B-Instruct": {**_QWEN25, **_shape(5120, 48, 40, 8, 13824, 152064, False)},
    "Qwen2.5-7B-Instruct": {**_QWEN25, **_shape(3584, 28, 28, 4, 18944, 152064, False)},
    "Qwen2.5-1.5B-Instruct": {**_QWEN25, **_shape(1536, 28, 12, 2, 8960, 151936, True)},
    "Qwen2.5-0.5B-Instruct": {**_QWEN25, **_shape(896, 24, 14, 2, 4864, 151936, True)},
    "gemma-2-9b-it": {**_GEMMA2, **_shape(3584, 42, 16, 8, 14336)},
    "gemma-2-2b-it": {**_GEMMA2, **_shape(2304, 26, 8, 4, 9216)},
    "Qwen3-8B": {**_QWEN3, **_shape(4096, 36, 32, 8, 12288, 151936, False)},
    "Qwen3-1.7B": {**_QWEN3, **_shape(2048, 28, 16, 8, 6144, 151936, True)},
}
for _name in list(MODEL_PRESETS):  # base and instruct checkpoints share their shapes
    MODEL_PRESETS.setdefault(_name.removesuffix("-Instruct").removesuffix("-it"), MODEL_PRESETS[_name])

# Memory per device (HBM); "cpu" is the host's RAM, shared by every (fake) device on it.
DEVICE_MEMORY = {"v5e": 16 * GIB, "v5p": 95 * GIB, "v6e": 32 * GIB, "h100": 80 * GIB, "h200": 141 * GIB}
DEVICES = (*DEVICE_MEMORY, "cpu")


def device_memory(device: str, local_devices: int = 1) -> int:
    """Bytes one device may use: its HBM, or for "cpu" the host RAM divided among the local devices."""
    if device == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(local_devices, 1)
    if device not in DEVICE_MEMORY:
        raise ValueError(f"--device must be one of {DEVICES}, got {device!r}")
    return DEVICE_MEMORY[device]


def model_config(path: str) -> tuple[ModelConfig, str]:
    """(ModelConfig, where it came from) for an HF folder, or a preset named like the path's last part."""
    folder = os.path.expanduser(path)
    if os.path.isfile(os.path.join(folder, "config.json")):
        return ModelConfig.from_hf(folder), folder
    name = os.path.basename(os.path.normpath(folder)).lower()
    for key, values in MODEL_PRESETS.items():
        if key.lower() == name:
            return ModelConfig.from_hf(values), f"preset {key}"
    raise FileNotFoundError(
        f"{path!r} is neither a folder with config.json nor a known preset ({', '.join(MODEL_PRESETS)})"
    )
