"""A layer-dropped student: keep a chosen subset of a teacher's blocks (the "shrink, then distil" recipe).

Keeping every other block of a pretrained model (DistilBERT's initialisation) gives a competent but degraded
student with real weights: the regime the paper distils in. Each kept block keeps its own weights and its
attention kind (Gemma 3's sliding/full pattern and per-kind RoPE base follow the block), embeddings and the
final norm are shared copies. The result is an ordinary Decoder: `models.save_pretrained` exports it as an HF
folder (config.json with the new `num_hidden_layers` and `layer_types`) that transformers loads.

    student = layerdrop.keep_layers(teacher, layerdrop.every_other(teacher.config.num_layers))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.decoder import Decoder

_HF_KINDS = {"sliding": "sliding_attention", "full": "full_attention"}


def every_other(num_layers: int, offset: int = 0) -> tuple[int, ...]:
    """Blocks offset, offset + 2, ...: 9 of Gemma-3-270M's 18 with offset 0."""
    return tuple(range(offset, num_layers, 2))


def check_keep(keep: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """`keep` as a sorted tuple of distinct, in-range layer indices (a clear error otherwise)."""
    keep = tuple(int(i) for i in keep)
    if not keep:
        raise ValueError("keep: give at least one layer index to keep")
    bad = [i for i in keep if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"keep: layer indices {bad} are out of range for a {num_layers}-layer model")
    if len(set(keep)) != len(keep) or list(keep) != sorted(keep):
        raise ValueError(f"keep: layer indices must be distinct and increasing, got {list(keep)}")
    return keep


def dropped_config(config: ModelConfig, keep: Sequence[int]) -> ModelConfig:
    """`config` with only the blocks in `keep` (HF config updated too, so the export describes the student)."""
    keep = check_keep(keep, config.num_layers)
    kinds = tuple(config.layer_kinds[i] for i in keep)
    hf = dict(config.hf_config) if config.hf_config is not None else None
    if hf is not None:
        text = hf.get("text_config") if hf.get("model_type") == "gemma3" else None
        target = dict(text) if text is not None else hf
        target["num_hidden_layers"] = len(keep)
        if config.layer_types:  # explicit: a derived pattern (every 6th full) would not follow the blocks
            target["layer_types"] = [_HF_KINDS[k] for k in kinds]
        if text is not None:
            hf["text_config"] = target
        else:
            hf = target
    return dataclasses.replace(
        config,
        num_layers=len(keep),
        layer_types=kinds if config.layer_types else (),
        hf_config=hf,
    )


def keep_layers(model: Decoder, keep: Sequence[int]) -> Decoder:
    """A new Decoder with `model`'s blocks `keep` (in order) and its embeddings/final norm (copies)."""
    keep = check_keep(keep, model.config.num_layers)
    config = dropped_config(model.config, keep)
    state = nnx.state(model, nnx.Param)
    param_dtype = state["embed"].get_value().dtype
    abstract = nnx.eval_shape(
        lambda: Decoder(
            config, rngs=nnx.Rngs(0), dtype=model.dtype, param_dtype=param_dtype, remat=model.remat
        )
    )
    graphdef, new_state = nnx.split(abstract)
    index = jnp.asarray(keep)
    old = {tuple(str(k) for k in key): var for key, var in nnx.to_flat_state(state)}
    flat = []
    for key, var in nnx.to_flat_state(new_state):
        value = old[tuple(str(k) for k in key)].get_value()
        if str(key[0]) == "layers":
            value = jnp.take(value, index, axis=0)  # the stacked "layers" axis
        flat.append((key, var.replace(jnp.array(value, copy=True))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))
