"""ModelConfig: explicit architecture switches for one decoder, built from Hugging Face config.json files."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "gemma2", "gemma3_text", "gemma3")
_GEMMA = ("gemma2", "gemma3_text")
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder architecture. Hashable (usable as a static jit argument); `hf_config` is carried for export."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10_000.0
    rope_local_theta: float | None = None  # base for "sliding" layers (Gemma 3); None = rope_theta
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # sorted items; rope_type "llama3" | "linear"
    rms_norm_eps: float = 1e-6
    norm_plus_one: bool = False  # Gemma: scale by (1 + w)
    tie_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    sandwich_norm: bool = False  # Gemma: norms before and after attention and MLP
    activation: str = "silu"  # "silu" | "gelu_tanh"
    embed_scale: float = 1.0  # sqrt(hidden_size) for Gemma
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5; None = head_dim
    sliding_window: int | None = None  # keys with position distance >= window are masked on "sliding" layers
    layer_types: tuple[str, ...] = ()  # "full" | "sliding" per layer; () = all full
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    model_type: str = "llama"
    hf_config: dict | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    generation_config: dict | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"ModelConfig.activation must be 'silu' or 'gelu_tanh', got {self.activation!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected {self.num_layers}")
        if any(t not in ("full", "sliding") for t in self.layer_types):
            raise ValueError(f"layer_types entries must be 'full' or 'sliding', got {self.layer_types}")

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        return self.layer_types or ("full",) * self.num_layers

    @property
    def attn_scale(self) -> float:
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def rope_scaling_dict(self) -> dict | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    @classmethod
    def from_hf(cls, path_or_dict: str | os.PathLike | dict) -> ModelConfig:
        """From a HF folder, a config.json path, or a config dict (qwen2, qwen3, llama, gemma2, gemma3[_text])."""
        source = "<dict>"
        if isinstance(path_or_dict, dict):
            raw = dict(path_or_dict)
        else:
            source = os.fspath(path_or_dict)
            if os.path.isdir(source):
                source = os.path.join(source, "config.json")
            if not os.path.isfile(source):
                raise FileNotFoundError(f"No config.json found: expected a Hugging Face config at {source}")
            with open(source) as f:
                raw = json.load(f)
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"Unsupported model_type {model_type!r} in {source}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        return _from_hf_config(_hf_config_object(raw), raw)


def _hf_config_object(raw: dict):
    """Let transformers normalise legacy fields (rope_scaling → rope_parameters, layer_types defaults)."""
    from transformers import CONFIG_MAPPING

    cfg = CONFIG_MAPPING[raw["model_type"]].from_dict(raw)
    return cfg.get_text_config() if raw["model_type"] == "gemma3" else cfg


def _rope(params: dict) -> tuple[float, tuple | None]:
    theta = float(params.get("rope_theta", 10_000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    elif rope_type == "linear":
        keys = ("factor",)
    else:
        raise ValueError(f"Unsupported rope_type {rope_type!r}; supported: default, linear, llama3")
    return theta, tuple(sorted([("rope_type", rope_type)] + [(k, float(params[k])) for k in keys]))


def _eos(value) -> int | tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list) else value


def _from_hf_config(c, raw: dict) -> ModelConfig:
    mt = c.model_type
    gemma = mt in _GEMMA
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if mt == "llama" and (getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False)):
        raise ValueError("llama configs with attention_bias or mlp_bias are not supported")
    rp = c.rope_parameters or {}
    local_theta = None
    if "full_attention" in rp:  # Gemma 3: one rope dict per layer type
        theta, scaling = _rope(rp["full_attention"])
        local_theta, local_scaling = _rope(rp.get("sliding_attention", {"rope_theta": theta}))
        if local_scaling is not None:
            raise ValueError("rope scaling on sliding-attention layers is not supported")
    else:
        theta, scaling = _rope(rp)
    hf_types = getattr(c, "layer_types", None) or ["full_attention"] * c.num_hidden_layers
    window = getattr(c, "sliding_window", None)
    kinds = tuple("sliding" if t == "sliding_attention" and window else "full" for t in hf_types)
    act = getattr(c, "hidden_activation", None) or c.hidden_act
    if act not in _ACTIVATIONS:
        raise ValueError(f"Unsupported activation {act!r}; supported: {sorted(_ACTIVATIONS)}")
    return ModelConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
        head_dim=head_dim,
        rope_theta=theta,
        rope_local_theta=local_theta,
        rope_scaling=scaling,
        rms_norm_eps=c.rms_norm_eps,
        norm_plus_one=gemma,
        tie_embeddings=bool(c.tie_word_embeddings),
        qkv_bias=mt == "qwen2",
        qk_norm=mt in ("qwen3", "gemma3_text"),
        sandwich_norm=gemma,
        activation=_ACTIVATIONS[act],
        embed_scale=float(c.hidden_size) ** 0.5 if gemma else 1.0,
        attn_logit_softcap=getattr(c, "attn_logit_softcapping", None) if gemma else None,
        final_logit_softcap=getattr(c, "final_logit_softcapping", None) if gemma else None,
        query_pre_attn_scalar=getattr(c, "query_pre_attn_scalar", None) if gemma else None,
        sliding_window=window if "sliding" in kinds else None,
        layer_types=kinds,
        bos_token_id=getattr(c, "bos_token_id", None),
        eos_token_id=_eos(getattr(c, "eos_token_id", None)),
        pad_token_id=getattr(c, "pad_token_id", None),
        model_type=mt,
        hf_config=raw,
    )
