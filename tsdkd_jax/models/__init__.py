"""Flax NNX decoder for Qwen2/2.5, Qwen3, Llama 3.x, Gemma 2 and Gemma 3 text, with HF weights in and out."""

from tsdkd_jax.models.cache import KVCache
from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.decoder import Decoder


def from_pretrained(path, dtype="float32", mesh=None, rules=None, vocab_size=None) -> Decoder:
    """Load a HF folder; with `mesh`, each parameter is created directly in its logical-axis sharding."""
    from tsdkd_jax.weights.load import from_pretrained as _load

    return _load(path, dtype=dtype, mesh=mesh, rules=rules, vocab_size=vocab_size)


def save_pretrained(model: Decoder, out_dir, max_shard_size: int = 5 * 1024**3) -> None:
    """Write an HF folder (config.json, safetensors shards + index, generation_config.json)."""
    from tsdkd_jax.weights.save import save_pretrained as _save

    _save(model, out_dir, max_shard_size=max_shard_size)


__all__ = ["Decoder", "KVCache", "ModelConfig", "from_pretrained", "save_pretrained"]
