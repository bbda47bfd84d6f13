"""Declarative HF ⇄ ours parameter table.

Each entry names our parameter path, the HF tensor name (with `{i}` for the layer index of stacked
parameters) and how the axes relate: `hf_dims` lists the HF tensor's axes, each a product of symbols
("N*H,D" = a [N*H, D] matrix whose rows are heads-major), `our_dims` the order of those symbols in our
array ("D,N,H"). Loading = reshape to the symbols then transpose; export is the inverse.
Symbols: V vocab, D model, N query heads, K kv heads, H head dim, F ffw hidden.
"""

from __future__ import annotations

import dataclasses

from tsdkd_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Entry:
    ours: str  # "embed" or "layers.q": layer entries are stacked on a leading layers axis
    hf: str
    hf_dims: str
    our_dims: str

    @property
    def stacked(self) -> bool:
        return self.ours.startswith("layers.")

    @property
    def hf_groups(self) -> list[list[str]]:
        return [group.split("*") for group in self.hf_dims.replace(" ", "").split(",") if group]

    @property
    def our_symbols(self) -> list[str]:
        return [s for s in self.our_dims.replace(" ", "").split(",") if s]


def dim_sizes(config: ModelConfig) -> dict[str, int]:
    c = config
    return {
        "V": c.vocab_size,
        "D": c.hidden_size,
        "N": c.num_heads,
        "K": c.num_kv_heads,
        "H": c.head_dim,
        "F": c.intermediate_size,
    }


_ATTN = "model.layers.{i}.self_attn."
_MLP = "model.layers.{i}.mlp."
_LAYER = "model.layers.{i}."


def table(config: ModelConfig) -> list[Entry]:
    """All entries for `config` (optional tensors only when the architecture has them)."""
    entries = [
        Entry("embed", "model.embed_tokens.weight", "V,D", "V,D"),
        Entry("final_norm", "model.norm.weight", "D", "D"),
        Entry("layers.q", _ATTN + "q_proj.weight", "N*H,D", "D,N,H"),
        Entry("layers.k", _ATTN + "k_proj.weight", "K*H,D", "D,K,H"),
        Entry("layers.v", _ATTN + "v_proj.weight", "K*H,D", "D,K,H"),
        Entry("layers.o", _ATTN + "o_proj.weight", "D,N*H", "N,H,D"),
        Entry("layers.gate", _MLP + "gate_proj.weight", "F,D", "D,F"),
        Entry("layers.up", _MLP + "up_proj.weight", "F,D", "D,F"),
        Entry("layers.down", _MLP + "down_proj.weight", "D,F", "F,D"),
        Entry("layers.attn_pre_norm", _LAYER + "input_layernorm.weight", "D", "D"),
    ]
    if not config.tie_embeddings:
        entries.append(Entry("lm_head", "lm_head.weight", "V,D", "V,D"))
    if config.qkv_bias:
        entries += [
            Entry("layers.q_bias", _ATTN + "q_proj.bias", "N*H", "N,H"),
            Entry("layers.k_bias", _ATTN + "k_proj.bias", "K*H", "K,H"),
            Entry("layers.v_bias", _ATTN + "v_proj.bias", "K*H", "K,H"),
        ]
    if config.qk_norm:
        entries += [
            Entry("layers.q_norm", _ATTN + "q_norm.weight", "H", "H"),
            Entry("layers.k_norm", _ATTN + "k_norm.weight", "H", "H"),
        ]
    if config.sandwich_norm:  # Gemma: "post_attention_layernorm" is the post-attention norm
        entries += [
            Entry("layers.attn_post_norm", _LAYER + "post_attention_layernorm.weight", "D", "D"),
            Entry("layers.mlp_pre_norm", _LAYER + "pre_feedforward_layernorm.weight", "D", "D"),
            Entry("layers.mlp_post_norm", _LAYER + "post_feedforward_layernorm.weight", "D", "D"),
        ]
    else:  # Llama/Qwen: "post_attention_layernorm" is the pre-MLP norm
        entries.append(Entry("layers.mlp_pre_norm", _LAYER + "post_attention_layernorm.weight", "D", "D"))
    return entries


def hf_shape(entry: Entry, sizes: dict[str, int]) -> tuple[int, ...]:
    shape = []
    for group in entry.hf_groups:
        n = 1
        for s in group:
            n *= sizes[s]
        shape.append(n)
    return tuple(shape)


def our_shape(entry: Entry, sizes: dict[str, int], num_layers: int) -> tuple[int, ...]:
    shape = tuple(sizes[s] for s in entry.our_symbols)
    return (num_layers, *shape) if entry.stacked else shape


def view_symbols(entry: Entry) -> list[str]:
    return [s for group in entry.hf_groups for s in group]


def to_ours_perm(entry: Entry) -> tuple[int, ...]:
    view = view_symbols(entry)
    return tuple(view.index(s) for s in entry.our_symbols)
