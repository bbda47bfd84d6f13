"""Decoder → HF folder (config.json, safetensors shards + index, generation_config.json)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from tsdkd_jax.weights import mapping

MAX_SHARD_BYTES = 5 * 1024**3


def save_pretrained(model, out_dir, max_shard_size: int = MAX_SHARD_BYTES) -> None:
    """Write `model` as a folder transformers' AutoModelForCausalLM.from_pretrained loads."""
    config = model.config
    if config.hf_config is None:
        raise ValueError(
            "save_pretrained needs the model's original HF config (ModelConfig.hf_config is None)"
        )
    os.makedirs(out_dir, exist_ok=True)
    sizes = mapping.dim_sizes(config)
    params = {tuple(str(k) for k in key): var for key, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    tensors: dict[str, np.ndarray] = {}
    for entry in mapping.table(config):
        value = np.asarray(jax.device_get(params[tuple(entry.ours.split("."))].get_value()))
        if entry.stacked:
            for i in range(config.num_layers):
                tensors[entry.hf.format(i=i)] = _to_hf(value[i], entry, sizes)
        else:
            tensors[entry.hf] = _to_hf(value, entry, sizes)
    _write_shards(tensors, out_dir, max_shard_size)
    _write_configs(config, out_dir)


def _to_hf(value: np.ndarray, entry: mapping.Entry, sizes) -> np.ndarray:
    inverse = np.argsort(mapping.to_ours_perm(entry))
    return np.ascontiguousarray(np.transpose(value, inverse).reshape(mapping.hf_shape(entry, sizes)))


def _write_shards(tensors: dict[str, np.ndarray], out_dir: str, max_shard_size: int) -> None:
    shards: list[dict[str, np.ndarray]] = [{}]
    used = 0
    for name, arr in tensors.items():
        if shards[-1] and used + arr.nbytes > max_shard_size:
            shards.append({})
            used = 0
        shards[-1][name] = arr
        used += arr.nbytes
    metadata = {"format": "pt"}  # transformers expects the torch format tag
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata=metadata)
        return
    weight_map = {}
    for n, shard in enumerate(shards, start=1):
        filename = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, filename), metadata=metadata)
        weight_map.update({name: filename for name in shard})
    total = sum(arr.nbytes for arr in tensors.values())
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _write_configs(config, out_dir: str) -> None:
    hf = dict(config.hf_config)
    if hf.get("model_type") == "gemma3":  # export the text model only
        hf = dict(hf.get("text_config") or {}, model_type="gemma3_text", architectures=["Gemma3ForCausalLM"])
    hf["vocab_size"] = config.vocab_size
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    gen = config.generation_config
    if gen is None:
        ids = {
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id,
        }
        gen = {k: list(v) if isinstance(v, tuple) else v for k, v in ids.items() if v is not None}
    if gen:
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
