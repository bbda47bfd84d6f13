"""Decoder: one Flax NNX causal LM for Qwen2/2.5, Qwen3, Llama 3.x, Gemma 2 and Gemma 3 text.

Per-layer parameters are stacked on a leading "layers" axis and the blocks run under `jax.lax.scan`, so a
48-layer model compiles one block. Per-layer differences (RoPE base, sliding window) are scanned arrays.
Models of at most UNROLL_MAX_LAYERS layers without remat (or `scan_layers=False`) run the full forward (no KV
cache) as a Python loop over the layers instead: the scan's stacked residual buffers (zero-filled, written and
re-sliced every step) cost more than the blocks' own math at the testbed's sizes on CPU (1.2x on its SFT
step, benchmarks/small_bench.py); the math is the same. The memory planner models both (plan/activations.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax.models.cache import KVCache
from tsdkd_jax.models.config import ModelConfig
from tsdkd_jax.models.layers import attention_masks, block, rms_norm, softcap
from tsdkd_jax.models.rope import layer_inv_freqs

UNROLL_MAX_LAYERS = 4  # scan_layers=None: unroll the full forward of models this shallow (0: never)


def layer_param_specs(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """Per-layer parameter name → (shape without the layers axis, logical axis names without "layers")."""
    D, N, K, H, F = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.intermediate_size,
    )
    specs = {
        "q": ((D, N, H), ("embed", "heads", "head_dim")),
        "k": ((D, K, H), ("embed", "kv_heads", "head_dim")),
        "v": ((D, K, H), ("embed", "kv_heads", "head_dim")),
        "o": ((N, H, D), ("heads", "head_dim", "embed")),
        "gate": ((D, F), ("embed", "mlp")),
        "up": ((D, F), ("embed", "mlp")),
        "down": ((F, D), ("mlp", "embed")),
        "attn_pre_norm": ((D,), ("norm",)),
        "mlp_pre_norm": ((D,), ("norm",)),
    }
    if config.qkv_bias:
        specs["q_bias"] = ((N, H), ("heads", "head_dim"))
        specs["k_bias"] = ((K, H), ("kv_heads", "head_dim"))
        specs["v_bias"] = ((K, H), ("kv_heads", "head_dim"))
    if config.qk_norm:
        specs["q_norm"] = ((H,), ("head_dim",))
        specs["k_norm"] = ((H,), ("head_dim",))
    if config.sandwich_norm:
        specs["attn_post_norm"] = ((D,), ("norm",))
        specs["mlp_post_norm"] = ((D,), ("norm",))
    return specs


def _param(rngs, shape, axes, dtype, kind):
    if kind == "norm":  # Gemma's (1 + w) norms start at w = 0
        value = jnp.zeros(shape, dtype)
    elif kind == "ones":
        value = jnp.ones(shape, dtype)
    elif kind == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    # Logical names only; the mesh placement is done by tsdkd_jax.parallel (eager sharding needs a mesh).
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class LayerStack(nnx.Module):
    """All blocks' parameters, each stacked on a leading "layers" axis."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        norm_kind = "norm" if config.norm_plus_one else "ones"
        for name, (shape, axes) in layer_param_specs(config).items():
            kind = norm_kind if "norm" in name else ("zeros" if "bias" in name else "normal")
            param = _param(rngs, (config.num_layers, *shape), ("layers", *axes), param_dtype, kind)
            setattr(self, name, param)
        self.names = tuple(layer_param_specs(config))

    def arrays(self) -> dict[str, jnp.ndarray]:
        return {name: getattr(self, name).get_value() for name in self.names}


class Decoder(nnx.Module):
    """Causal LM. `dtype` is the compute dtype, `param_dtype` the storage dtype; logits are float32."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        remat: bool = False,
        scan_layers: bool | None = None,
    ):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.remat = remat
        self.scan_layers = (
            scan_layers  # None: scans_layers' rule (the full forward only; the cache path scans)
        )
        V, D = config.vocab_size, config.hidden_size
        self.embed = _param(rngs, (V, D), ("vocab", "embed"), param_dtype, "normal")
        self.layers = LayerStack(config, rngs=rngs, param_dtype=param_dtype)
        self.final_norm = _param(
            rngs, (D,), ("norm",), param_dtype, "norm" if config.norm_plus_one else "ones"
        )
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (V, D), ("vocab", "embed"), param_dtype, "normal")

    # ---- full forward -------------------------------------------------------------------------------

    def __call__(self, input_ids, attention_mask=None):
        """input_ids [B,T] → logits [B,T,V] float32; positions from the mask, so left padding is exact."""
        return self.unembed(self.hidden_states(input_ids, attention_mask))

    def hidden_states(self, input_ids, attention_mask=None):
        """input_ids [B,T] → final-normed hidden states [B,T,D] in the compute dtype."""
        mask_BT = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
        positions_BT = jnp.maximum(jnp.cumsum(mask_BT, axis=1) - 1, 0).astype(jnp.int32)
        slots_BT = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        masks = attention_masks(positions_BT, slots_BT, positions_BT, mask_BT, self.config.sliding_window)
        x_BTD, _ = self._blocks(self._embed(input_ids), positions_BT, masks, None, 0)
        return self._final_norm(x_BTD)

    def unembed(self, hidden):
        """hidden [...,D] → logits [...,V] float32 (tied or untied head, final-logit soft-capping)."""
        table_VD = (self.embed if self.config.tie_embeddings else self.lm_head).get_value()
        logits = jnp.einsum(
            "...D,VD->...V", hidden, table_VD.astype(hidden.dtype), preferred_element_type=jnp.float32
        )
        return softcap(logits, self.config.final_logit_softcap)

    # ---- KV cache -----------------------------------------------------------------------------------

    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
        c = self.config
        return KVCache.zeros(
            c.num_layers, batch_size, max_len, c.num_kv_heads, c.head_dim, dtype or self.dtype
        )

    def prefill(self, input_ids, attention_mask, cache: KVCache):
        """Write a (left-padded) prompt [B,T] into the cache → (logits of the last slot [B,V], cache)."""
        hidden_BTD, cache = self._cached(input_ids, attention_mask.astype(bool), cache)
        return self.unembed(hidden_BTD[:, -1]), cache

    def decode_step(self, tokens, cache: KVCache, token_valid=None):
        """One token per row [B] → (logits [B,V], cache); rows with token_valid=False keep their position."""
        valid_B = jnp.ones(tokens.shape, bool) if token_valid is None else token_valid.astype(bool)
        hidden_BTD, cache = self._cached(tokens[:, None], valid_B[:, None], cache)
        return self.unembed(hidden_BTD[:, 0]), cache

    def _cached(self, ids_BT, mask_BT, cache: KVCache):
        B, T = ids_BT.shape
        positions_BT = cache.next_position[:, None] + jnp.maximum(jnp.cumsum(mask_BT, axis=1) - 1, 0)
        positions_BT = positions_BT.astype(jnp.int32)
        k_pos_BS = jax.lax.dynamic_update_slice(cache.positions, positions_BT, (0, cache.index))
        k_valid_BS = jax.lax.dynamic_update_slice(cache.valid, mask_BT, (0, cache.index))
        slots_BT = jnp.broadcast_to(cache.index + jnp.arange(T), (B, T))
        masks = attention_masks(positions_BT, slots_BT, k_pos_BS, k_valid_BS, self.config.sliding_window)
        x_BTD, (k, v) = self._blocks(
            self._embed(ids_BT), positions_BT, masks, (cache.k, cache.v), cache.index
        )
        cache = KVCache(
            k=k,
            v=v,
            positions=k_pos_BS,
            valid=k_valid_BS,
            index=cache.index + T,
            next_position=cache.next_position + mask_BT.sum(axis=1).astype(jnp.int32),
        )
        return self._final_norm(x_BTD), cache

    # ---- internals ----------------------------------------------------------------------------------

    def _embed(self, ids_BT):
        x_BTD = jnp.take(self.embed.get_value(), ids_BT, axis=0).astype(self.dtype)
        if self.config.embed_scale != 1.0:
            x_BTD = x_BTD * jnp.asarray(self.config.embed_scale, self.dtype)
        return x_BTD

    def _final_norm(self, x_BTD):
        c = self.config
        return rms_norm(x_BTD, self.final_norm.get_value(), c.rms_norm_eps, c.norm_plus_one)

    def _blocks(self, x_BTD, positions_BT, masks, kv_cache, write_index):
        """Scan the stacked blocks; returns (x, (k, v) stacked per layer or None)."""
        c = self.config
        inv_freq_LF = jnp.asarray(layer_inv_freqs(c))
        sliding_L = jnp.asarray(np.array([kind == "sliding" for kind in c.layer_kinds]))
        full_BTS, sliding_BTS = masks

        def body(x, xs):
            p, inv_freq_F, is_sliding, kv = xs
            # without a window both masks are one array: no per-layer select of [B, T, S]
            mask_BTS = full_BTS if sliding_BTS is full_BTS else jnp.where(is_sliding, sliding_BTS, full_BTS)
            x, kv = block(c, p, x, positions_BT, inv_freq_F, mask_BTS, kv, write_index)
            return x, kv

        unrolled = kv_cache is None and not self._scans()
        if self.remat:  # unrolled blocks need prevent_cse, or XLA merges the recomputation into the forward
            body = jax.checkpoint(body, prevent_cse=unrolled)
        arrays = self.layers.arrays()
        if (adapters := getattr(self, "lora", None)) is not None:  # a LoRA student (models/lora.py)
            arrays["lora"] = adapters.arrays()
        xs = (arrays, inv_freq_LF, sliding_L, kv_cache)
        if unrolled:
            return _unrolled(body, x_BTD, xs, c.num_layers), None
        return jax.lax.scan(body, x_BTD, xs)

    def _scans(self) -> bool:
        # scan_layers is absent on graphdefs saved before the field existed
        return scans_layers(self.config.num_layers, self.remat, getattr(self, "scan_layers", None))


def scans_layers(num_layers: int, remat: bool, scan_layers: bool | None = None) -> bool:
    """Whether the full forward runs its layers under lax.scan: `scan_layers` when set, else unless the model
    has at most UNROLL_MAX_LAYERS layers and no remat (XLA on CPU schedules an unrolled block's recomputation
    right after its forward, so remat saves nothing outside the scan: measured by tests/plan's remat case)."""
    if scan_layers is not None:
        return bool(scan_layers)
    return num_layers > UNROLL_MAX_LAYERS or remat


def _unrolled(body, x, xs, num_layers: int):
    """lax.scan's carry result, as a Python loop over static layer slices (no per-layer outputs)."""
    for i in range(num_layers):
        x, _ = body(x, jax.tree.map(lambda a, i=i: a[i], xs))
    return x
