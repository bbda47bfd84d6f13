"""HF safetensors folder → Decoder, each parameter created directly in its target sharding.

Vocabulary: our vocab_size is the checkpoint's `config.vocab_size`, which for Qwen already includes the
alignment rows beyond the tokenizer (151,936 rows for ~151,665 tokens); those rows are loaded as they are so
export round-trips exactly. `vocab_size=` pads the embedding/unembedding with zero rows up to a larger
vocabulary (e.g. a 151,936-row student to a 152,064-row teacher, the official run's resize); the extra ids
are never produced by the tokenizer. An embedding tensor with a row count other than config.vocab_size is
an error.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import SingleDeviceSharding

from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.decoder import Decoder
from tsdkd_jax.parallel.sharding import logical_to_sharding
from tsdkd_jax.weights import gguf, mapping
from tsdkd_jax.weights.reader import CheckpointReader

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def from_pretrained(path, dtype="float32", mesh=None, rules=None, vocab_size: int | None = None) -> Decoder:
    """Load a HF folder (config.json + safetensors) or a .gguf file (see weights.gguf) into a Decoder with params and compute in `dtype`."""
    if str(dtype) not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    dtype = _DTYPES[str(dtype)]
    config, reader = _open(os.fspath(path))
    ckpt_sizes = mapping.dim_sizes(config)
    entries = mapping.table(config)
    _check_tensors(reader, entries, ckpt_sizes, config.num_layers)
    if vocab_size is not None:
        if vocab_size < config.vocab_size:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the checkpoint's {config.vocab_size}")
        config = dataclasses.replace(config, vocab_size=vocab_size)

    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype))
    graphdef, state = nnx.split(abstract)
    by_path = {tuple(e.ours.split(".")): e for e in entries}
    flat = []
    for key, var in nnx.to_flat_state(state):
        entry = by_path.get(tuple(str(k) for k in key))
        if entry is None:
            raise ValueError(f"No mapping for parameter {'.'.join(map(str, key))} of {config.model_type}")
        names = var.get_metadata()["out_sharding"]
        if mesh is None:
            sharding = SingleDeviceSharding(jax.devices()[0])
        else:
            sharding = logical_to_sharding(names, mesh, rules, var.shape)
        value = _make_param(reader, entry, ckpt_sizes, var.shape, dtype, sharding, config.num_layers)
        flat.append((key, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _open(path: str):
    """(ModelConfig, reader) of an HF folder, a .gguf file, or a folder holding one .gguf (no config.json)."""
    gguf_path = gguf.find_gguf(path)
    if gguf_path is not None:
        reader = gguf.GGUFCheckpoint(gguf_path)
        return ModelConfig.from_hf(reader.hf_config), reader
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"No config.json in {path}: expected a Hugging Face model folder or a .gguf file"
        )
    config = ModelConfig.from_hf(path)
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
        with open(gen_path) as f:
            config = dataclasses.replace(config, generation_config=json.load(f))
    return config, CheckpointReader(path)


def _check_tensors(reader: CheckpointReader, entries, sizes, num_layers: int):
    """Every tensor present with its expected shape, before anything is allocated."""
    for entry in entries:
        expected = mapping.hf_shape(entry, sizes)
        names = _layer_names(entry, 0, num_layers) if entry.stacked else [entry.hf]
        for name in names:
            if name not in reader:
                raise KeyError(f"Missing tensor {name!r} in {reader.folder} (expected shape {expected})")
            got = reader.shape(name)
            if got != expected:
                raise ValueError(
                    f"Tensor {name!r} in {reader.file_of(name)} has shape {got}, expected {expected} "
                    f"(dims {entry.hf_dims} with {sizes})"
                )


def _layer_names(entry, start, stop):
    return [entry.hf.format(i=i) for i in range(start, stop)]


def _make_param(reader, entry, sizes, shape, dtype, sharding, num_layers):
    """jax.Array of `shape` in `sharding`, each device's block read from the checkpoint on demand."""
    ckpt_shape = mapping.our_shape(entry, sizes, num_layers)

    def block(index):
        index = tuple(index) + (slice(None),) * (len(shape) - len(index))
        ranges = [idx.indices(n)[:2] for idx, n in zip(index, shape, strict=True)]
        # Vocabulary padding: rows at or beyond the checkpoint's vocabulary are zeros.
        clipped = [(lo, min(hi, c)) for (lo, hi), c in zip(ranges, ckpt_shape, strict=True)]
        out = np.zeros([hi - lo for lo, hi in ranges], dtype)
        if all(hi > lo for lo, hi in clipped):
            part = _read_block(reader, entry, sizes, clipped)
            out[tuple(slice(0, hi - lo) for lo, hi in clipped)] = part
        return out

    return jax.make_array_from_callback(shape, sharding, block)


def _read_block(reader, entry, sizes, ranges):
    if entry.stacked:
        (l0, l1), rest = ranges[0], ranges[1:]
        return np.stack([_read_one(reader, entry.hf.format(i=i), entry, sizes, rest) for i in range(l0, l1)])
    return _read_one(reader, entry.hf, entry, sizes, ranges)


def _read_one(reader, name, entry, sizes, our_ranges):
    """Read only the HF rows/cols that hold our block `our_ranges`, then reshape + transpose to our layout."""
    sym_range = dict(zip(entry.our_symbols, our_ranges, strict=True))
    hf_index, view_shape, view_slices = [], [], []
    for group in entry.hf_groups:
        lead, rest = group[0], group[1:]
        inner = int(np.prod([sizes[s] for s in rest])) if rest else 1
        rest_full = all(sym_range[s] == (0, sizes[s]) for s in rest)
        if rest_full:  # contiguous rows: read just the leading symbol's range
            lo, hi = sym_range[lead]
            hf_index.append(slice(lo * inner, hi * inner))
            view_shape += [hi - lo] + [sizes[s] for s in rest]
            view_slices += [slice(None)] * len(group)
        else:
            hf_index.append(slice(None))
            view_shape += [sizes[s] for s in group]
            view_slices += [slice(*sym_range[s]) for s in group]
    arr = reader.read(name, tuple(hf_index)).reshape(view_shape)[tuple(view_slices)]
    return np.transpose(arr, mapping.to_ours_perm(entry))
