"""Mesh construction, logical-axis → mesh-axis sharding rules, multi-host start-up."""

from tsdkd_jax.parallel import distributed
from tsdkd_jax.parallel.distributed import is_host0
from tsdkd_jax.parallel.mesh import make_mesh
from tsdkd_jax.parallel.sharding import DEFAULT_RULES, logical_to_sharding, shard_model, state_shardings

__all__ = [
    "DEFAULT_RULES",
    "distributed",
    "is_host0",
    "logical_to_sharding",
    "make_mesh",
    "shard_model",
    "state_shardings",
]
