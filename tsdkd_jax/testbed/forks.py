"""Fork positions of testbed v2 solutions and a model's entropy there (issue 11: is there anything to choose?).

A response position t is a *fork* when another valid style of the same problem's solution has the same tokens
before t and a different token at t (testbed_problems.all_styles enumerates the styles). At a fork a model
that learnt the style distribution should spread its mass over the branches (entropy ≈ ln 2 = 0.69 nats for a
fair coin between two); elsewhere it should be near-deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax.data import chat_prompt_ids
from tsdkd_jax.eval import testbed_problems as tp


def style_token_ids(row: dict, tokenizer, eot_id: int) -> dict[tp.Style, list[int]]:
    """Every style's response token ids (content + end of turn) for one problem row."""
    ops = [tuple(op) for op in row["ops"]]
    out = {}
    for style in tp.all_styles(len(ops)):
        text = "\n".join(tp.solution_lines(row["name"], row["start"], ops, style))
        out[style] = tokenizer(text, add_special_tokens=False)["input_ids"] + [eot_id]
    return out


def fork_positions(ids: list[int], alternatives: list[list[int]]) -> list[int]:
    """Positions t where some alternative shares ids[:t] and differs at t."""
    forks = set()
    for alt in alternatives:
        t = 0
        while t < min(len(ids), len(alt)) and ids[t] == alt[t]:
            t += 1
        if t < len(ids) and t < len(alt):
            forks.add(t)
    return sorted(forks)


@nnx.jit
def _entropies(model, ids, mask):
    logp = jax.nn.log_softmax(model(ids, mask).astype(jnp.float32), axis=-1)
    return -(jnp.exp(logp) * logp).sum(-1)


def entropy_at_forks(model, tokenizer, rows, eot_id: int, *, length: int = 112, batch: int = 64) -> dict:
    """Mean model entropy (nats) at fork and at non-fork response positions of each row's own solution."""
    seqs, marks = [], []
    for row in rows:
        styles = style_token_ids(row, tokenizer, eot_id)
        own = tp.Style(row["style"]["restate"], row["style"]["words"], tuple(row["style"]["swaps"]))
        forks = fork_positions(styles[own], [v for s, v in styles.items() if s != own])
        prompt = chat_prompt_ids(tokenizer, row["prompt"])
        seqs.append((prompt, styles[own]))
        marks.append(forks)
    fork_h, other_h = [], []
    for lo in range(0, len(seqs), batch):
        chunk = seqs[lo : lo + batch]
        ids = np.zeros((len(chunk), length), np.int32)
        mask = np.zeros_like(ids)
        for j, (p, r) in enumerate(chunk):
            full = p + r
            ids[j, length - len(full) :], mask[j, length - len(full) :] = full, 1
        h = np.asarray(_entropies(model, jnp.asarray(ids), jnp.asarray(mask)))
        for j, (p, r) in enumerate(chunk):
            start = length - len(r) - 1  # logits at index i predict token i + 1
            for t in range(len(r)):
                (fork_h if t in marks[lo + j] else other_h).append(float(h[j, start + t]))
    return {"fork_mean": float(np.mean(fork_h)), "fork_median": float(np.median(fork_h)),
            "n_fork": len(fork_h), "other_mean": float(np.mean(other_h)), "n_other": len(other_h)}  # fmt: skip
