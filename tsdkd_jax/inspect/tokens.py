"""Per-token statistics of sampled responses under a run's loss config: what the TSD-KD selections see.

`token_table` is pure (logits in, NumPy arrays out) and uses the loss's own functions: entropies from
losses.entropy, the gate from losses.entropy_gate, the EM set and opener from losses/terms.py selections (the
selection.py functions the train step uses, by variant). `collect` rebuilds a run from its workdir (the
config the trainer recorded, its latest checkpoint and its teacher), samples a few held-out prompts (or those
of a given file) with the student and returns one row per response.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import data, losses, sampling
from tsdkd_jax.losses import terms as loss_terms
from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import objectives, rollout
from tsdkd_jax.train import step as step_lib

STATS = ("h_s", "h_t", "gate", "opener", "em_set", "teacher_rank", "teacher_topk_mass")


def token_table(z, u, ids, mask, cfg: losses.LossConfig) -> dict[str, np.ndarray]:
    """[B, N] arrays of every STATS entry for student/teacher logits [B, N, V] scoring tokens `ids` [B, N].

    teacher_rank: 1 + the number of ids the teacher scores above the sampled token (1 = its top choice);
    teacher_topk_mass: the teacher's probability mass on the student's top-k ids (k = cfg.rank_k).
    """
    z, u = losses.align_vocab(jnp.asarray(z, jnp.float32), jnp.asarray(u, jnp.float32))
    mask = jnp.asarray(mask, jnp.float32)
    h_s, h_t = losses.entropy(z), losses.entropy(u)
    sel = loss_terms.selections(h_s, mask, cfg)
    u_tok = jnp.take_along_axis(u, jnp.asarray(ids, jnp.int32)[..., None], axis=-1)
    _, top = jax.lax.top_k(z, min(cfg.rank_k, z.shape[-1]))
    p_t = jax.nn.softmax(u, axis=-1)
    out = {
        "h_s": h_s,
        "h_t": h_t,
        "gate": losses.entropy_gate(h_s, h_t, cfg.gate_tau) if cfg.use_gate else jnp.ones_like(h_s),
        "opener": sel["opener"],
        "em_set": sel["em_set"] * mask,  # the official EM set also holds padding (never shown)
        "teacher_rank": 1 + jnp.sum(u > u_tok, axis=-1),
        "teacher_topk_mass": jnp.sum(jnp.take_along_axis(p_t, top, axis=-1), axis=-1),
    }
    return {name: np.asarray(value) for name, value in out.items()}


def _trainer(workdir: str):
    from tsdkd_jax import train  # the trainer pulls in checkpointing; only needed here

    return train.Trainer(config_lib.recorded(workdir), workdir)


def _prompts(t, prompts_path: str | None):
    """(PromptSet, label): every row of `prompts_path` (the run's data fields), else the run's held-out split,
    else (a run without one) its training prompts."""
    if prompts_path:
        cfg = {**t.config.data.to_dict(), "path": prompts_path, "holdout_size": 0, "holdout_fraction": 0.0}
        rows, _, _ = data.load_prompt_data(cfg, t.tokenizer, eos_ids=t.eos_ids)
        return rows, os.path.basename(prompts_path)
    if len(t.heldout):
        return t.heldout, "held-out prompts"
    return t.iterator.examples, "training prompts (the run has no held-out split)"


def collect(workdir: str, *, n_prompts: int = 4, seed: int = 0, prompts_path: str | None = None) -> dict:
    """{"step", "method", "variant", "prompts", "rows"}: the first `n_prompts` prompts (see _prompts)
    answered by the run's student (its latest checkpoint) with the run's sampling settings; each row holds
    the prompt, the response tokens as text and their STATS."""
    t = _trainer(workdir)
    try:
        return _collect(t, workdir, n_prompts=n_prompts, seed=seed, prompts_path=prompts_path)
    finally:
        t.close()  # the workdir lock and the checkpoint manager


def _collect(t, workdir: str, *, n_prompts: int, seed: int, prompts_path: str | None) -> dict:
    c = t.config
    if t.teacher_params is None:
        raise ValueError(f"{workdir}: method={c.method} has no teacher; nothing to inspect")
    cfg = objectives.loss_config(c)
    if not isinstance(cfg, losses.LossConfig):  # CE runs and MiniLLM: shown with the paper's TSD-KD loss
        cfg = losses.make_config()
    prompts, label = _prompts(t, prompts_path)
    b = next(data.eval_batches(
        prompts, batch_size=c.data.batch_size, max_prompt_len=c.data.max_prompt_len,
        max_response_len=c.data.max_response_len, pad_id=t.pad_id,
        prompt_bucket=c.data.prompt_bucket, bucket_multiple=c.data.bucket_multiple,
    ))  # fmt: skip
    prompt_ids, prompt_mask = t.to_global(b["prompt_ids"]), t.to_global(b["prompt_mask"])
    key = sampling.sample_key(seed, 0, 0)
    tokens, mask = t.sample(t.graphdef, t.state["params"], prompt_ids, prompt_mask, key)
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": tokens,
        "response_mask": mask,
    }
    inputs = step_lib.score_inputs(batch, t.spec)
    n = inputs["labels"].shape[1]
    p = inputs["tokens"].shape[1] - n
    z = nnx.merge(t.graphdef, t.state["params"])(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    u = nnx.merge(t.teacher_graphdef, t.teacher_params)(inputs["tokens"], inputs["attn"])[
        :, p - 1 : p - 1 + n
    ]
    z, u, ids, m, pids, pm = rollout.to_host(
        (z, u, inputs["labels"], inputs["loss_mask"], prompt_ids, prompt_mask)
    )
    table = token_table(z, u, ids, m, cfg)
    rows = []
    for i in range(min(n_prompts, int(np.sum(b["example_mask"])))):
        keep = m[i] > 0
        rows.append({
            "prompt": t.tokenizer.decode(pids[i][pm[i] > 0].tolist(), skip_special_tokens=True),
            "tokens": [t.tokenizer.decode([int(x)]) for x in ids[i][keep]],
            **{name: table[name][i][keep].tolist() for name in STATS},
        })  # fmt: skip
    t.ckpt.close()
    return {"step": t.start_step, "method": c.method, "variant": cfg.variant, "prompts": label, "rows": rows}
