"""The pure train step: frozen teacher forward, student loss and gradient over micro-batches, AdamW update.

batch (global arrays, batch axis over the mesh's data axes):
  prompt_ids, prompt_mask      [B, P] left-padded prompts
  response_ids, response_mask  [B, N] right-padded responses (sampled or from the dataset), mask 1 up to and
                               including the first EOS
Scoring runs teacher and student on the same tokens [prompt; response] with the same attention mask
(positions follow the mask); the logits at position P − 1 + t predict response token t. Only the N response
positions' hidden states reach the loss, which is computed in token chunks from them (never [B, T, V]).

Micro-batch j of an accumulation window of k holds rows {i·k + j}: with the batch sharded over devices every
micro-batch stays spread over all of them without moving data.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tsdkd_jax import losses
from tsdkd_jax.losses import minillm
from tsdkd_jax.losses import terms as loss_terms
from tsdkd_jax.train import diagnostics, methods
from tsdkd_jax.train import objectives as obj
from tsdkd_jax.train import state as state_lib

# Below this many logit entries per micro-batch (16 MiB in f32) the loss runs on all tokens at once, without the
# chunk scan and its rematerialisation (the testbed: vocab 419); plan/activations.py counts its residuals.
FULL_LOGITS_MAX = 2**22


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static parts of the step (hashable: bound with functools.partial before jit)."""

    loss_cfg: losses.LossConfig | None  # None = cross-entropy on the responses (sft, seqkd)
    normalize: str  # "global" | "micro_batch"
    grad_accum: int
    chunk_size: int
    vocab_policy: str
    mask_pad_id: int = -1  # ≥ 0 (official parity, pad = EOS): tokens equal to it are masked everywhere
    logits_dtype: str = "float32"  # "bfloat16": logits rounded to bf16 before the (f32) loss (official)
    term_grad_norms: bool = True  # grad_norm/<term> of KD losses (diagnostics.py)
    full_logits_max: int = FULL_LOGITS_MAX  # loss unchunked when a micro-batch's [N, V] logits are this small
    fused: bool = False  # KD losses by losses/fused.py (value and gradient in one pass, config loss.fused)
    mesh: Mesh | None = None
    batch_axes: Any = ("data", "fsdp")


def score_inputs(batch, spec: StepSpec) -> dict[str, jax.Array]:
    """Tokens, attention mask, loss mask and labels of the scoring pass."""
    tokens = jnp.concatenate([batch["prompt_ids"], batch["response_ids"]], axis=1)
    attn = jnp.concatenate([batch["prompt_mask"], batch["response_mask"]], axis=1).astype(jnp.int32)
    loss_mask = batch["response_mask"].astype(jnp.float32)
    if spec.mask_pad_id >= 0:  # the released run: pad = EOS, so every EOS is unattended and unsupervised
        attn = attn * (tokens != spec.mask_pad_id)
        loss_mask = loss_mask * (batch["response_ids"] != spec.mask_pad_id)
    return {"tokens": tokens, "attn": attn, "loss_mask": loss_mask, "labels": batch["response_ids"]}


def _split_micro(x, k: int, spec: StepSpec):
    b = x.shape[0]
    out = x.reshape(b // k, k, *x.shape[1:]).swapaxes(0, 1)
    if spec.mesh is not None:
        sharding = NamedSharding(spec.mesh, PartitionSpec(None, spec.batch_axes))
        out = jax.lax.with_sharding_constraint(out, sharding)
    return out


def response_hidden(model, mb, n: int):
    """Final hidden states [B, n, D] at the positions whose next token is one of the n response tokens."""
    hidden = model.hidden_states(mb["tokens"], mb["attn"])
    p = mb["tokens"].shape[1] - n
    return hidden[:, p - 1 : p - 1 + n]


def loss_chunk(spec: StepSpec, hs, *models) -> int:
    """The loss's chunk size for response hidden states [B, N, D] (head_chunk's size rule)."""
    vocab = max(m.config.vocab_size for m in models if m is not None)
    return head_chunk(spec, hs.shape[0] * hs.shape[1], vocab, size_rule_only=True)


def head_chunk(spec: StepSpec, tokens: int, vocab: int, size_rule_only=False) -> int:
    """The loss head's (_head's) chunk size for one micro-batch's `tokens` response tokens, `vocab` the larger
    model's: 0 (unchunked) when their logits have at most spec.full_logits_max entries; MiniLLM and the fused
    loss always chunk by spec.chunk_size (unless size_rule_only). The memory planner asks this."""
    cfg = spec.loss_cfg
    if not size_rule_only and (
        isinstance(cfg, minillm.MiniLLMConfig) or (spec.fused and isinstance(cfg, losses.LossConfig))
    ):
        return spec.chunk_size
    return 0 if tokens * vocab <= spec.full_logits_max else spec.chunk_size


def kd_stats(hs, ht, *, student, teacher, spec: StepSpec) -> dict[str, jax.Array]:
    """Per-token statistics of spec.loss_cfg from the two models' response hidden states [B, N, D]."""
    return obj.kd_token_stats(
        hs, ht, spec.loss_cfg, s_unembed=student.unembed, t_unembed=teacher.unembed,
        chunk_size=loss_chunk(spec, hs, student, teacher), vocab_policy=spec.vocab_policy,
        logits_dtype=spec.logits_dtype,
    )  # fmt: skip


def _selection_prepass(params, graphdef, mbs, spec: StepSpec):
    """Student-only pass fixing each micro-batch's EM set and opener before any gradient (global counts)."""
    n = mbs["labels"].shape[-1]

    def body(_, mb):
        student = nnx.merge(graphdef, params)
        hs = response_hidden(student, mb, n)
        h = obj.student_entropy(hs, s_unembed=student.unembed, chunk_size=loss_chunk(spec, hs, student))
        return None, loss_terms.selections(jax.lax.stop_gradient(h), mb["loss_mask"], spec.loss_cfg)

    _, sel_masks = jax.lax.scan(body, None, mbs)
    return sel_masks


def _head(hs, mb, teacher_hidden, sel_masks, counts, *, student, teacher, spec: StepSpec, fused=False):
    """(terms, sums) of one micro-batch from the student's response hidden states (the loss head)."""
    cfg, mask = spec.loss_cfg, mb["loss_mask"]
    if fused and isinstance(cfg, losses.LossConfig):
        return obj.fused_kd_terms(hs, teacher_hidden, mask, cfg, sel_masks, counts, student=student,
                                  teacher=teacher, spec=spec)  # fmt: skip
    if cfg is None:
        chunk = loss_chunk(spec, hs, student)
        stats = obj.ce_token_stats(hs, mb["labels"], s_unembed=student.unembed, chunk_size=chunk)
        sums = loss_terms.ce_sums(stats, mask)
    elif isinstance(cfg, minillm.MiniLLMConfig):  # policy gradient on the sampled tokens: whole responses
        stats = obj.minillm_token_stats(
            hs, teacher_hidden, mb["labels"], student=student, teacher=teacher, spec=spec
        )
        sums = minillm.sums(stats, mask, cfg)
    else:
        stats = kd_stats(hs, teacher_hidden, student=student, teacher=teacher, spec=spec)
        if sel_masks is None:
            sel_masks = loss_terms.selections(stats["h_s"], mask, cfg)
        sums = loss_terms.kd_sums(stats, mask, cfg, sel_masks)
    if spec.normalize == "micro_batch":
        return obj.micro_batch_terms(stats, mask, cfg, sums, spec.grad_accum), sums
    counts = counts or {name: sums[name][1] for name in loss_terms.term_weights(cfg)}
    return obj.global_terms(sums, counts, cfg), sums


def _micro_loss(params, mb, teacher_hidden, sel_masks, counts, *, graphdef, teacher, spec: StepSpec):
    """(loss contribution, (terms, sums, squared per-term hidden-state gradient norms)) of one micro-batch;
    see objectives.py for the normalisation and diagnostics.py for the norms."""
    n = mb["labels"].shape[-1]
    student = nnx.merge(graphdef, params)
    hs = response_hidden(student, mb, n)
    head = functools.partial(_head, mb=mb, teacher_hidden=teacher_hidden, sel_masks=sel_masks, counts=counts,
                             teacher=teacher, spec=spec)  # fmt: skip
    terms, sums = head(hs, student=student, fused=spec.fused)
    carrier = terms.pop(obj.FUSED_GRAD, 0.0)  # the fused loss's gradient (value 0)
    weights = loss_terms.term_weights(spec.loss_cfg)  # held fixed by the per-term gradient norms
    grad_sq = {}
    if spec.loss_cfg is not None and spec.term_grad_norms:  # through the head only, weights held fixed
        frozen = nnx.merge(graphdef, jax.lax.stop_gradient(params))
        grad_sq = diagnostics.term_grad_sq(lambda h: head(h, student=frozen)[0], hs, weights)
    return loss_terms.combine(terms, spec.loss_cfg) + carrier, (terms, sums, grad_sq)


def teacher_hidden(teacher_params, batch, *, teacher_graphdef, spec: StepSpec):
    """The frozen teacher's response hidden states of every micro-batch [k, B/k, N, D] (profile mode only:
    the fused step computes them one micro-batch at a time inside its scan)."""
    mbs = {name: _split_micro(x, spec.grad_accum, spec) for name, x in score_inputs(batch, spec).items()}
    teacher = nnx.merge(teacher_graphdef, teacher_params)
    n = mbs["labels"].shape[-1]
    return jax.lax.map(lambda mb: jax.lax.stop_gradient(response_hidden(teacher, mb, n)), mbs)


def student_grads(
    params, teacher_params, batch, teacher_hiddens=None, *, graphdef, teacher_graphdef, spec: StepSpec
):
    """Summed gradients, terms and (numerator, count) sums over the accumulation window, the token count,
    and the per-term squared hidden-state gradient norms (diagnostics.py). The teacher's hidden states are
    computed per micro-batch inside the scan unless given."""
    k, cfg = spec.grad_accum, spec.loss_cfg
    inputs = score_inputs(batch, spec)
    mbs = {name: _split_micro(x, k, spec) for name, x in inputs.items()}
    n_tok = jnp.sum(inputs["loss_mask"])

    sel_all, counts = None, None
    if spec.normalize == "global" and k > 1:
        counts = {"loss/direct": n_tok, "loss/ce": n_tok, **{name: n_tok for name in minillm.TERMS}}
        if cfg is not None and (cfg.use_em or cfg.use_indirect):
            sel_all = _selection_prepass(params, graphdef, mbs, spec)
            counts["loss/em"] = jnp.sum(sel_all["em_set"])
            counts["loss/indirect"] = jnp.sum(sel_all["opener"])

    teacher = None if teacher_graphdef is None else nnx.merge(teacher_graphdef, teacher_params)
    trainable, frozen = state_lib.split_trainable(params)  # a LoRA student: gradients of its adapters only
    grad_fn = jax.value_and_grad(
        lambda tp, mb, th, sm: _micro_loss(
            state_lib.join_trainable(tp, frozen), mb, th, sm, counts, graphdef=graphdef, teacher=teacher,
            spec=spec,
        ),
        has_aux=True,
    )  # fmt: skip

    def body(carry, xs):
        mb, sm, th = xs
        if teacher is not None and th is None:  # frozen: forward only, outside the differentiated function
            th = jax.lax.stop_gradient(response_hidden(teacher, mb, mb["labels"].shape[-1]))
        (_, aux), grads = grad_fn(trainable, mb, th, sm)  # aux: terms, sums, squared grad norms
        return (jax.tree.map(jnp.add, carry[0], grads), *jax.tree.map(jnp.add, carry[1:], aux)), None

    # Abstract evaluation of one micro-batch gives the carry's structure.
    mb0 = jax.tree.map(lambda x: x[0], mbs)
    sm0 = None if sel_all is None else jax.tree.map(lambda x: x[0], sel_all)
    th0 = None
    if teacher is not None:
        th0 = jax.eval_shape(lambda mb: response_hidden(teacher, mb, mb["labels"].shape[-1]), mb0)
    _, aux_s = jax.eval_shape(lambda p, mb, th, sm: _micro_loss(p, mb, th, sm, counts, graphdef=graphdef,
                                                                teacher=teacher, spec=spec), params, mb0, th0, sm0)  # fmt: skip
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
    carry = (jax.tree.map(jnp.zeros_like, trainable), *zeros(aux_s))
    xs = (mbs, sel_all, teacher_hiddens)
    if k == 1:  # no while loop around the only micro-batch (its overhead shows at small sizes)
        (grads, terms, sums, grad_sq), _ = body(carry, jax.tree.map(lambda x: x[0], xs))
    else:
        (grads, terms, sums, grad_sq), _ = jax.lax.scan(body, carry, xs)
    return grads, terms, sums, n_tok, grad_sq


def apply_update(state, grads, terms, sums, n_tok, grad_sq=None, *, tx, lr_fn, spec: StepSpec):
    """The optimizer update and the step's metrics from student_grads' outputs."""
    loss = loss_terms.combine(terms, spec.loss_cfg)
    grad_norm = optax.tree.norm(grads)
    trainable, frozen = state_lib.split_trainable(state["params"])  # grads: of `trainable` only
    updates, opt_state = tx.update(grads, state["opt_state"], trainable)
    new_state = {
        "params": state_lib.join_trainable(optax.apply_updates(trainable, updates), frozen),
        "opt_state": opt_state,
        "step": state["step"] + 1,
        "rng": state["rng"],  # the run's key, constant: rollout.py folds the step into it
    }
    metrics = {"loss": loss, **terms, "grad_norm": grad_norm, "lr": lr_fn(state["step"]), "tokens": n_tok}
    metrics.update(diagnostics.grad_norms(grad_sq or {}))
    metrics.update(diagnostics.clip_frac(opt_state, new_state["step"]))
    metrics.update(
        {name: num / jnp.maximum(den, 1.0) for name, (num, den) in sums.items() if name not in terms}
    )
    return new_state, metrics


def train_step(state, teacher_params, batch, *, graphdef, teacher_graphdef, tx, lr_fn, spec: StepSpec):
    """One optimizer step over the global batch → (new state, metrics); see the module docstring. The step is
    deterministic given its batch; the loop draws the sampling keys from state["rng"] (rollout.py)."""
    out = student_grads(
        state["params"],
        teacher_params,
        batch,
        graphdef=graphdef,
        teacher_graphdef=teacher_graphdef,
        spec=spec,
    )
    return apply_update(state, *out, tx=tx, lr_fn=lr_fn, spec=spec)


def make_spec(config, *, pad_id: int, mesh, batch_axes) -> StepSpec:
    """The StepSpec of an experiment config (pad_id: the run's pad token, masked in the official variant)."""
    c = config
    official = methods.of(c).pad_is_eos
    return StepSpec(
        loss_cfg=methods.loss_config(c),
        normalize=c.loss.normalize,
        grad_accum=c.optim.grad_accum,
        chunk_size=c.loss.chunk_size,
        vocab_policy=c.loss.vocab_policy,
        mask_pad_id=pad_id if official else -1,
        logits_dtype=c.loss.logits_dtype,
        term_grad_norms=c.loss.term_grad_norms,
        full_logits_max=c.loss.get("full_logits_max", FULL_LOGITS_MAX),
        fused=c.loss.fused,
        mesh=mesh,
        batch_axes=batch_axes,
    )


def jit_train_step(spec, *, graphdef, teacher_graphdef, tx, lr_fn, state_shardings, teacher_params, mesh):
    """train_step jitted with explicit shardings, donating the state (never the teacher)."""
    fn = functools.partial(
        train_step, graphdef=graphdef, teacher_graphdef=teacher_graphdef, tx=tx, lr_fn=lr_fn, spec=spec
    )
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(spec.batch_axes, None))
    teacher_shardings = jax.tree.map(lambda x: x.sharding, teacher_params)
    return jax.jit(
        fn,
        in_shardings=(state_shardings, teacher_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )
