"""The train step's activation memory per device: one block's residuals, the student's saved activations under
each layer policy (scanned, scanned with remat, unrolled), and the loss's working memory (chunked or not).

Which policy the student runs is the model's own rule (models.decoder.scans_layers) and which loss path the
step takes is the step's (train.step.head_chunk); the planner asks them rather than repeating them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tsdkd_jax.parallel import logical_to_sharding
from tsdkd_jax.train import objectives as obj
from tsdkd_jax.train import step as step_lib

F32 = 4
# Live [tokens, V] float32 buffers of one loss chunk: both sides' logits, log-softmaxes and probabilities,
# the JSD mixture and its log (forward), then the chunk's recomputation and cotangents in the backward pass.
LOSS_BUFFERS = 10
# The unchunked loss's backward beyond its residuals, in [tokens, V_student] float32 buffers: the logits'
# cotangent, its transposed copy for the unembedding's gradient and the softmax the backward forms
# (measured on the tiny models' cross-entropy step, whose residual is the logits alone).
LOSS_BACKWARD_BUFFERS = 3


def shard_elems(names, shape, mesh, rules) -> int:
    return math.prod(logical_to_sharding(names, mesh, rules, shape).shard_shape(tuple(shape)))


def split(name: str, size: int, mesh, rules) -> int:
    """Per-device extent of a dimension of logical `name` (unsplit when not divisible, as the rules do)."""
    return shard_elems((name,), (size,), mesh, rules)


def score_bytes(cfg, rows: int, q_len: int, k_len: int, mesh, rules) -> int:
    """One float32 [rows, heads, q_len, k_len] attention-score buffer on a device."""
    return rows * split("heads", cfg.num_heads, mesh, rules) * q_len * k_len * F32


def block_bytes(cfg, rows: int, q_len: int, k_len: int, itemsize: int, mesh, rules, residuals=True) -> int:
    """One transformer block for `rows` × `q_len` queries over `k_len` keys. residuals=True: what the block
    keeps for its backward pass (the residuals jax's AD saves for layers.block, as listed by
    jax.ad_checkpoint.print_saved_residuals); False: the live set of a forward-only block (teacher,
    prefill), where XLA frees each intermediate once consumed."""
    heads, kv = split("heads", cfg.num_heads, mesh, rules), split("kv_heads", cfg.num_kv_heads, mesh, rules)
    ffw, tokens, d, h = (
        split("mlp", cfg.intermediate_size, mesh, rules),
        rows * q_len,
        cfg.hidden_size,
        cfg.head_dim,
    )
    scores = rows * heads * q_len * k_len * (2 * F32 + 1)  # masked f32 logits, f32 softmax, the bool mask
    if not residuals:
        return scores + tokens * ((3 * d + 2 * ffw + (heads + 2 * kv) * h) * itemsize)
    hidden = tokens * d * (5 * itemsize + 2 * F32)  # residual stream, norm outputs; the norms' f32 upcasts
    qkv = tokens * (2 * heads + 6 * kv) * h * itemsize  # q (and its grouped view), k and v before/after RoPE
    mlp = tokens * 6 * ffw * itemsize  # gate, up, the activation's pieces, act(gate) · up
    return hidden + qkv + scores + mlp


def student_activations(cfg, rows: int, t_len: int, itemsize: int, mesh, rules, *, remat: bool, scans: bool):
    """(saved bytes, one block's backward working set, how) of the student's layers for `rows` × `t_len`."""
    block = block_bytes(cfg, rows, t_len, t_len, itemsize, mesh, rules)
    scores = score_bytes(cfg, rows, t_len, t_len, mesh, rules)
    if remat:  # the scan keeps each block's input; a block's residuals are recomputed in backward
        # (measured: XLA frees the recomputed residuals as the cotangents form; the f32 score cotangent stays)
        carry = rows * t_len * cfg.hidden_size * itemsize
        return cfg.num_layers * carry, block + scores, "remat: each block's input"
    if scans:  # the scan's stacked residuals, and one block's sliced back out of them in the backward pass
        return cfg.num_layers * block, block, "no remat: each block's residuals"
    # Unrolled: the residuals stay where they were computed, and XLA fuses the mask and the softmax's
    # exponent into their consumers (the masked f32 scores are not kept); the backward's largest new
    # buffer is the f32 score cotangent (measured: 1, 2 and 4 layers, 8 × 96 tokens, within 3 %).
    return cfg.num_layers * (block - scores), scores, "unrolled, no remat: each block's residuals"


def loss_residual_bytes(spec, tokens: int, s_vocab: int, t_vocab: int) -> int:
    """Bytes jax's AD keeps for the backward pass of the step's unchunked loss on `tokens` tokens (the loss
    head of train.objectives, traced on abstract logits: nothing is computed)."""
    z = jax.ShapeDtypeStruct((1, tokens, s_vocab), jnp.float32)
    same = lambda h: h  # the head's input are the logits themselves
    if spec.loss_cfg is None:  # cross-entropy methods
        labels = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
        f = lambda z, y: obj.ce_token_stats(z, y, s_unembed=same, chunk_size=0)
        args = (z, labels)
    else:
        u = jax.ShapeDtypeStruct((1, tokens, t_vocab), jnp.float32)
        f = lambda z, u: obj.kd_token_stats(z, u, spec.loss_cfg, s_unembed=same, t_unembed=same, chunk_size=0,
                                            vocab_policy=spec.vocab_policy, logits_dtype=spec.logits_dtype)  # fmt: skip
        args = (z, u)
    pullback = jax.eval_shape(lambda z, other: jax.vjp(lambda z: f(z, other), z)[1], *args)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(pullback))


def loss_bytes(
    spec, rows: int, tokens: int, s_vocab: int, t_vocab: int | None, mesh, rules
) -> tuple[int, str]:
    """(bytes, note) of the loss's working memory per device: one micro-batch of `tokens` response tokens
    over `rows` device rows (of the micro-batch's spec.grad_accum-th of the batch), chunked or not as the step
    decides (train.step.head_chunk)."""
    chunk = step_lib.head_chunk(spec, tokens, max(s_vocab, t_vocab or 0))
    v_dev = split("vocab", max(s_vocab, t_vocab or 0), mesh, rules)
    batch_rows = shard_elems(("batch",), (rows,), mesh, rules)
    if chunk:
        tok_dev = -(-min(chunk, tokens) // (rows // batch_rows))  # chunks are spread over the batch shards
        return LOSS_BUFFERS * tok_dev * v_dev * F32, f"{tok_dev} tokens × {v_dev} vocab × {LOSS_BUFFERS} f32"
    tok_dev = tokens // (rows // batch_rows)
    s_dev = split("vocab", s_vocab, mesh, rules)
    t_dev = split("vocab", t_vocab or s_vocab, mesh, rules)
    kept = loss_residual_bytes(spec, tok_dev, s_dev, t_dev)
    backward = LOSS_BACKWARD_BUFFERS * tok_dev * s_dev * F32
    return kept + backward, f"unchunked: {tok_dev} tokens' AD residuals + {LOSS_BACKWARD_BUFFERS} f32 [N, V]"
