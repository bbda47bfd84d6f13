"""Mesh construction and logical-axis → mesh-axis sharding rules."""

from tsdkd_jax.parallel.mesh import make_mesh
from tsdkd_jax.parallel.sharding import DEFAULT_RULES, logical_to_sharding, shard_model, state_shardings

__all__ = ["DEFAULT_RULES", "logical_to_sharding", "make_mesh", "shard_model", "state_shardings"]
