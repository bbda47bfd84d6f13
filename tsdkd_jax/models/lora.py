"""LoRA students: low-rank adapters on chosen projections of the decoder, the base weights frozen.

For a target projection y = x · W (layers.PROJECTIONS; W's axes are its input axes then its output axes) the
adapter adds (α/r) · (x · A) · B, with A [L, *in, r] and B [L, r, *out] stacked on the layers axis like W.
A starts as PEFT's default does (uniform in ±1/√fan_in), B at zero, so a fresh adapter leaves the model's
outputs unchanged. The adapters are one submodule, `model.lora`, so the student's pure-dict params gain one
top-level key, "lora": the train step differentiates that subtree only and the optimizer holds state for it
only (train/state.py's `split_trainable`). A and B carry the base weight's logical axis names on their shared
axes and "lora_rank" (replicated unless a rule names it) on the other, so they shard by the same rules.

Why hand-written (about a hundred lines) and not a library:
- qwix (LoraProvider / apply_lora_to_model) adds adapters by intercepting the einsum and dot_general calls of
  the NNX modules it matches by path, attaching them to the weight parameter the call reads. Our decoder has
  no module per projection: all layers' weights are stacked arrays of one module, sliced inside `lax.scan`
  and multiplied by pure functions (layers.py), so there is no module path or parameter to attach to; it is
  also a quantisation library, a large dependency for this one feature.
- nnx.LoRA / nnx.LoRALinear are 2-D adapters for nnx.Linear (x @ A @ B, no α/r scaling); our weights are
  multi-axis ([D, N, H], [N, H, D]) and stacked per layer, so they fit neither without reshaping the model.
No dropout on the adapter input: the train step is deterministic given its batch (it takes no RNG), and the
exported adapter says lora_dropout = 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from tsdkd_jax.models.decoder import Decoder, layer_param_specs
from tsdkd_jax.models.layers import PROJECTIONS, weight_axes
from tsdkd_jax.parallel.sharding import logical_to_sharding

TARGETS = tuple(PROJECTIONS)  # q, k, v, o, gate, up, down
RANK_AXIS = "lora_rank"


def default_config() -> ml_collections.ConfigDict:
    """The experiment config's `lora` section (train/config.py)."""
    c = ml_collections.ConfigDict()
    c.rank = 0  # r; 0 = off (the whole student trains); > 0: only rank-r adapters on `targets` train
    c.alpha = 16.0  # the update is scaled by alpha / rank (PEFT's lora_alpha)
    c.targets = "q,k,v,o,gate,up,down"  # comma-separated projections of every block (any of TARGETS)
    return c


def targets_of(config) -> tuple[str, ...]:
    return tuple(t.strip() for t in str(config.targets).split(",") if t.strip())


def validate(config) -> None:
    """ValueError naming the `lora.*` field at fault."""
    rank = config.rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"lora.rank: must be an integer >= 0 (0 = off), got {rank!r}")
    if rank == 0:
        return
    if not isinstance(config.alpha, int | float) or not config.alpha > 0:
        raise ValueError(f"lora.alpha: must be > 0, got {config.alpha!r}")
    targets = targets_of(config)
    unknown = [t for t in targets if t not in TARGETS]
    if not targets or unknown or len(set(targets)) != len(targets):
        raise ValueError(
            f"lora.targets: expected distinct names from {TARGETS}, comma-separated; got {config.targets!r}"
        )


class Adapters(nnx.Module):
    """The A and B of every target (attributes `<target>_a`, `<target>_b`), the rank r and α."""

    def __init__(self, params: dict[str, nnx.Param], *, targets: tuple[str, ...], rank: int, alpha: float):
        for name, param in params.items():
            setattr(self, name, param)
        self.targets, self.rank, self.alpha = targets, int(rank), float(alpha)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def arrays(self) -> dict[str, dict[str, jax.Array]]:
        """{target: {"a": (α/r)·A, "b": B}}: what layers.project reads ((α/r)·(x·A)·B = x·((α/r)·A)·B; the
        scale folded into A keeps the scanned block free of Python constants)."""
        return {
            t: {
                "a": getattr(self, f"{t}_a").get_value() * self.scale,
                "b": getattr(self, f"{t}_b").get_value(),
            }
            for t in self.targets
        }


def adapter_specs(model_config, target: str, rank: int):
    """((A shape, A logical axes), (B shape, B logical axes), fan_in) of `target`, layers axis included."""
    shape, names = layer_param_specs(model_config)[target]
    w_axes = PROJECTIONS[target].split("->")[0].split(",")[1]
    dims = dict(zip(w_axes, zip(shape, names, strict=True), strict=True))
    in_axes, out_axes = weight_axes(target)
    num_layers = model_config.num_layers
    a = (
        (num_layers, *(dims[s][0] for s in in_axes), rank),
        ("layers", *(dims[s][1] for s in in_axes), RANK_AXIS),
    )
    b = (
        (num_layers, rank, *(dims[s][0] for s in out_axes)),
        ("layers", RANK_AXIS, *(dims[s][1] for s in out_axes)),
    )
    return a, b, math.prod(dims[s][0] for s in in_axes)


def add_adapters(model: Decoder, config, *, seed: int, mesh=None, rules=None) -> Decoder:
    """Give `model` fresh adapters per the `lora` config section (in place; nothing when rank is 0). With a
    mesh, each adapter is created directly in the sharding its logical names ask for."""
    if not config.rank:
        return model
    validate(config)
    dtype = model.embed.get_value().dtype  # the student's parameter dtype
    key = jax.random.key(seed)
    params = {}
    for i, target in enumerate(targets_of(config)):
        (a_shape, a_names), (b_shape, b_names), fan_in = adapter_specs(model.config, target, config.rank)
        bound = 1.0 / math.sqrt(fan_in)
        a = _create(lambda k, s=a_shape, b=bound: jax.random.uniform(k, s, dtype, -b, b), a_shape, a_names,
                    jax.random.fold_in(key, i), mesh, rules)  # fmt: skip
        b = _create(lambda k, s=b_shape: jnp.zeros(s, dtype), b_shape, b_names, key, mesh, rules)
        params[f"{target}_a"] = nnx.Param(a, out_sharding=a_names, eager_sharding=False)
        params[f"{target}_b"] = nnx.Param(b, out_sharding=b_names, eager_sharding=False)
    model.lora = Adapters(params, targets=targets_of(config), rank=config.rank, alpha=config.alpha)
    return model


def _create(fn, shape, names, key, mesh, rules):
    if mesh is None:
        return jax.jit(fn)(key)
    return jax.jit(fn, out_shardings=logical_to_sharding(names, mesh, rules, shape))(key)


def has_adapters(model) -> bool:
    return getattr(model, "lora", None) is not None


def merge_into_base(model: Decoder) -> Decoder:
    """W ← W + (α/r)·A·B for every adapted weight, then the adapters are dropped: an ordinary Decoder whose
    forward equals the adapted one (in place; on host copies: the export's). Summed in float32."""
    adapters = model.lora
    for target in adapters.targets:
        in_axes, out_axes = weight_axes(target)
        w_axes = PROJECTIONS[target].split("->")[0].split(",")[1]
        a = np.asarray(getattr(adapters, f"{target}_a").get_value(), np.float32) * adapters.scale
        b = np.asarray(getattr(adapters, f"{target}_b").get_value(), np.float32)
        delta = np.einsum(f"L{in_axes}R,LR{out_axes}->L{w_axes}", a, b)
        weight = getattr(model.layers, target)
        base = np.asarray(weight.get_value())
        weight.set_value(jnp.asarray((base.astype(np.float32) + delta).astype(base.dtype)))
    del model.lora
    return model
