"""Logical axis names → mesh axes: one default rule table, and placement of NNX model state."""

from __future__ import annotations

import functools
import logging

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

# Logical axis → mesh axis (or tuple of axes, or None = replicated).
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
}


def logical_to_spec(names, mesh: Mesh, rules=None, shape=None) -> PartitionSpec:
    """PartitionSpec for logical `names`; a dim not divisible by its mesh axes (or reusing one) is replicated."""
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        target = rules.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        size = 1
        for axis in axes:
            size *= mesh.shape[axis]
        if not axes or used & set(axes) or (shape is not None and shape[i] % size):
            if axes and shape is not None and shape[i] % size:
                _log_replicated(name, int(shape[i]), axes, size)
            spec.append(None)
            continue
        used |= set(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


@functools.cache  # once per distinct case, not per call (this runs inside traced code)
def _log_replicated(name: str, dim: int, axes: tuple[str, ...], size: int) -> None:
    log.info(
        "logical axis %r of size %d does not divide mesh axes %s (%d devices): replicated",
        name,
        dim,
        axes,
        size,
    )


def logical_to_sharding(names, mesh: Mesh, rules=None, shape=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(names, mesh, rules, shape))


def state_shardings(state: nnx.State, mesh: Mesh, rules=None):
    """NamedSharding per Variable of an (abstract or concrete) NNX state, from its `out_sharding` names."""

    def one(var):
        names = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
        return logical_to_sharding(names, mesh, rules, var.shape)

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules=None) -> nnx.Module:
    """Move every parameter of `model` (in place) to the sharding its logical names ask for."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh, rules)
    values = jax.tree.map(lambda v: v.get_value(), state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    nnx.update(model, jax.device_put(values, shardings))
    return model
