"""HF safetensors ⇄ Decoder parameters: name-mapping table, (sharded) loading, export."""

from tsdkd_jax.weights.load import from_pretrained
from tsdkd_jax.weights.save import save_pretrained

__all__ = ["from_pretrained", "save_pretrained"]
