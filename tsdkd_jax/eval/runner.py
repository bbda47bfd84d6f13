"""Batched generation and teacher-forced scoring with our model, and the two evaluation loops.

`evaluate` generates with `sampling.generate` (greedy by default; n samples per prompt with temperature > 0)
and scores each output; `evaluate_choices` picks the option whose continuation has the highest summed
log-probability given the prompt. Both return (metrics, per-example rows) and optionally write the rows as
JSONL. Prompts are sorted by length (longest first) and cut into fixed-size batches, each left-padded to its
bucket (`sampling.pad_batch`), so a run compiles one program per bucket; outputs come back in input order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import sampling
from tsdkd_jax.data.tokenizer import chat_prompt_ids, with_bos
from tsdkd_jax.eval.metrics import accuracy, write_jsonl
from tsdkd_jax.eval.scorers import Scorer, get_scorer, gold_letter

_CHUNK = 128  # time steps unembedded at once when scoring: never a full [B,T,V] logits tensor


def encode_prompts(tokenizer, prompts: Sequence[Any], *, chat: bool = True) -> list[list[int]]:
    """Token ids per prompt: a chat (str = one user turn) ending with the assistant header, or raw text."""
    if chat:
        return [chat_prompt_ids(tokenizer, p) for p in prompts]
    return [with_bos(tokenizer, tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the earliest of the stop strings (lm-eval's `until`)."""
    for s in stop:
        if s:
            text = text.split(s, 1)[0]
    return text


def generate_texts(
    model: nnx.Module,
    prompt_ids: Sequence[Sequence[int]],
    tokenizer,
    *,
    batch_size: int,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    temperature: float = 0.0,
    seed: int = 0,
    stop: Sequence[str] = (),
    bucket_multiple: int = 64,
    mesh=None,
) -> list[str]:
    """Decoded continuations (EOS and everything after it dropped, cut at `stop`), in input order."""
    graphdef, state = nnx.split(model)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    texts: list[str] = [""] * len(prompt_ids)
    eos = {int(e) for e in eos_token_ids}
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        batch = sampling.pad_batch(
            [prompt_ids[i] for i in idx], pad_id=pad_token_id, batch_size=batch_size, multiple=bucket_multiple
        )
        out = sampling.generate_from_state(
            graphdef,
            state,
            batch.ids,
            batch.mask,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            eos_token_ids=tuple(eos_token_ids),
            pad_token_id=pad_token_id,
            rng=sampling.sample_key(seed, b, 0) if temperature > 0 else None,
            mesh=mesh,
        )
        tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
        for row, i in enumerate(idx):
            ids = [int(t) for t in tokens[row, : int(mask[row].sum())] if int(t) not in eos]
            texts[i] = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=False), stop)
    return texts


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _token_logprobs(graphdef, state, ids_BT, mask_BT, targets_BT):
    """log p(target_t | ids_≤t) [B,T] and whether the target is the argmax [B,T], chunked over T."""
    model = nnx.merge(graphdef, state)
    hidden_BTD = model.hidden_states(ids_BT, mask_BT)
    B, T, D = hidden_BTD.shape
    pad = -T % _CHUNK
    h_CBtD = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0))).reshape(B, -1, _CHUNK, D).swapaxes(0, 1)
    t_CBt = jnp.pad(targets_BT, ((0, 0), (0, pad))).reshape(B, -1, _CHUNK).swapaxes(0, 1)

    def chunk(args):
        h_BtD, t_Bt = args
        logits_BtV = model.unembed(h_BtD).astype(
            jnp.float32
        )  # log-softmax in fp32 whatever the compute dtype
        logp_BtV = jax.nn.log_softmax(logits_BtV, axis=-1)
        lp_Bt = jnp.take_along_axis(logp_BtV, t_Bt[..., None], axis=-1)[..., 0]
        return lp_Bt, jnp.argmax(logits_BtV, axis=-1) == t_Bt

    lp, greedy = jax.lax.map(chunk, (h_CBtD, t_CBt))
    return lp.swapaxes(0, 1).reshape(B, -1)[:, :T], greedy.swapaxes(0, 1).reshape(B, -1)[:, :T]


def continuation_logprobs(
    model: nnx.Module,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    pad_token_id: int = 0,
    max_length: int | None = None,
    bucket_multiple: int = 64,
) -> list[tuple[float, bool]]:
    """(Σ log p(continuation | context), whether greedy decoding gives the continuation) per pair.

    Teacher-forced: one forward pass of context + continuation (minus its last token); with `max_length`,
    the sequence is cut from the left so at most that many tokens are fed.
    """
    graphdef, state = nnx.split(model)
    seqs, n_cont = [], []
    for ctx, cont in zip(contexts, continuations):
        if not cont:
            raise ValueError("an empty continuation has no log-likelihood to score")
        if not ctx:
            raise ValueError("an empty context: give at least one token (e.g. BOS/EOS) to condition on")
        seq = list(ctx) + list(cont)
        if max_length is not None:
            seq = seq[-(max_length + 1) :]
        seqs.append(seq)
        n_cont.append(len(cont))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    results: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = sampling.pad_batch(
            [seqs[i][:-1] for i in idx], pad_id=pad_token_id, batch_size=batch_size, multiple=bucket_multiple
        )
        targets = np.zeros_like(batch.ids)
        for row, i in enumerate(idx):
            targets[row, targets.shape[1] - len(seqs[i]) + 1 :] = seqs[i][1:]
        lp, greedy = _token_logprobs(graphdef, state, batch.ids, batch.mask, targets)
        lp, greedy = np.asarray(lp, np.float64), np.asarray(greedy)
        for row, i in enumerate(idx):
            n = n_cont[i]
            results[i] = (float(lp[row, -n:].sum()), bool(greedy[row, -n:].all()))
    return results


def _finish(rows: list[dict], per_example: list[float], jsonl_path) -> tuple[dict, list[dict]]:
    metrics = accuracy(per_example)
    if jsonl_path:
        write_jsonl(jsonl_path, rows)
    return metrics, rows


def _score_rows(examples, outputs, score, num_samples: int) -> tuple[list[dict], list[float]]:
    """One row per (example, sample) and each example's fraction of correct samples."""
    rows, per_example = [], []
    for i, ex in enumerate(examples):
        hits = 0
        for s in range(num_samples):
            out = outputs[i * num_samples + s]
            v = score(out, ex)
            hits += v.correct
            rows.append({"id": ex.get("id", i), "sample": s, "prompt": ex["prompt"], "output": out,
                         "extracted": v.extracted, "gold": ex["gold"], "correct": bool(v.correct),
                         "detail": v.detail})  # fmt: skip
        per_example.append(hits / num_samples)
    return rows, per_example


def evaluate(
    model: nnx.Module,
    examples: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    scorer: str | Scorer,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    chat: bool = True,
    num_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    stop: Sequence[str] = (),
    jsonl_path: str | None = None,
    mesh=None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Generate for each example's "prompt" and score against its "gold".

    Returns ({accuracy, ci95_low, ci95_high, n, correct}, rows); one row per (example, sample) with id,
    sample, prompt, output, extracted, gold, correct, detail.
    """
    if num_samples > 1 and temperature <= 0:
        raise ValueError(f"num_samples={num_samples} needs temperature > 0 (greedy samples are identical)")
    score = get_scorer(scorer)
    ids = encode_prompts(tokenizer, [e["prompt"] for e in examples], chat=chat)
    outputs = generate_texts(
        model,
        [p for p in ids for _ in range(num_samples)],
        tokenizer,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        temperature=temperature,
        seed=seed,
        stop=stop,
        mesh=mesh,
    )
    rows, per_example = _score_rows(examples, outputs, score, num_samples)
    return _finish(rows, per_example, jsonl_path)


def evaluate_choices(
    model: nnx.Module,
    examples: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    batch_size: int = 8,
    pad_token_id: int,
    chat: bool = False,
    delimiter: str = " ",
    jsonl_path: str | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Multiple choice by log-likelihood: the option maximising Σ log p(delimiter + option | prompt).

    Like lm-eval's `acc`: context and continuation are tokenized together and split at the context's
    length, so a merge across the boundary is scored as part of the continuation.
    """
    contexts, continuations, owner = [], [], []
    for i, ex in enumerate(examples):
        ctx_ids = encode_prompts(tokenizer, [ex["prompt"]], chat=chat)[0]
        ctx_text = tokenizer.decode(ctx_ids, skip_special_tokens=False) if chat else ex["prompt"]
        for choice in ex["choices"]:
            context, continuation = ctx_text, delimiter + choice
            n_spaces = len(context) - len(context.rstrip())  # trailing spaces belong to the continuation
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            whole = with_bos(
                tokenizer, tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            )
            n_ctx = len(with_bos(tokenizer, tokenizer(context, add_special_tokens=False)["input_ids"]))
            contexts.append(whole[:n_ctx])
            continuations.append(whole[n_ctx:])
            owner.append(i)
    scores = continuation_logprobs(
        model, contexts, continuations, batch_size=batch_size, pad_token_id=pad_token_id
    )
    rows, per_example = [], []
    for i, ex in enumerate(examples):
        lls = [s for (s, _), o in zip(scores, owner) if o == i]
        pred = int(np.argmax(lls))
        gold = gold_letter(ex["gold"])
        correct = "ABCDEFGHIJ"[pred] == gold
        per_example.append(float(correct))
        rows.append(
            {
                "id": ex.get("id", i),
                "prompt": ex["prompt"],
                "output": ex["choices"][pred],
                "extracted": "ABCDEFGHIJ"[pred],
                "gold": gold,
                "correct": correct,
                "loglikelihoods": lls,
            }
        )
    return _finish(rows, per_example, jsonl_path)
