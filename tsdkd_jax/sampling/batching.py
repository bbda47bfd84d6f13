"""Static shapes for the sampler, and its RNG.

Bucket policy: a batch's prompts are left-padded to `data.bucket_length(longest)` (default: the next multiple
of 64, or the next power of two with policy="pow2", never above `max_len`), and the batch is padded with
empty rows (mask all 0) to a fixed `batch_size`. The sampler then compiles one program per
(batch_size, bucket, max_new_tokens, top-k cap): a run with prompts up to 512 tokens compiles at most 8
programs under "multiple", at most 10 under "pow2". Filler rows are generated like any other row; drop
everything past `num_rows`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from tsdkd_jax.data.iterator import bucket_length


class PaddedBatch(NamedTuple):
    ids: np.ndarray  # [batch_size, bucket] int32, left-padded with pad_id
    mask: np.ndarray  # [batch_size, bucket] int32
    num_rows: int  # rows that hold real prompts; the rest are filler


def pad_batch(
    prompt_ids,
    prompt_mask=None,
    *,
    pad_id: int = 0,
    batch_size: int | None = None,
    policy: str = "multiple",
    multiple: int = 64,
    max_len: int | None = None,
) -> PaddedBatch:
    """Left-pad prompts (a list of token lists, or [B,T] ids with a mask of any padding side) to the bucket."""
    if prompt_mask is None:
        rows = [np.asarray(r, np.int32).reshape(-1) for r in prompt_ids]
    else:
        ids, mask = np.asarray(prompt_ids), np.asarray(prompt_mask).astype(bool)
        if ids.shape != mask.shape or ids.ndim != 2:
            raise ValueError(f"prompt_ids {ids.shape} and prompt_mask {mask.shape} must be [B,T] alike")
        rows = [r[m].astype(np.int32) for r, m in zip(ids, mask)]
    longest = max((len(r) for r in rows), default=1)
    if max_len is not None and longest > max_len:
        raise ValueError(f"a prompt has {longest} tokens, more than max_len={max_len}")
    length = bucket_length(
        longest, max_len=max_len or longest * 2 + multiple, policy=policy, multiple=multiple
    )
    b = len(rows) if batch_size is None else batch_size
    if b < len(rows):
        raise ValueError(f"batch_size={batch_size} is smaller than the {len(rows)} prompts given")
    out_ids = np.full((b, length), pad_id, np.int32)
    out_mask = np.zeros((b, length), np.int32)
    for i, r in enumerate(rows):
        if len(r):
            out_ids[i, length - len(r) :] = r
            out_mask[i, length - len(r) :] = 1
    return PaddedBatch(out_ids, out_mask, len(rows))


def sample_key(seed: int, step: int, process_index: int | None = None) -> jax.Array:
    """Sampling key from (seed, step, host), the same on every run.

    Under one multi-host program the key is a replicated input: pass the same process_index (e.g. 0) on every
    host; rows still differ (each row draws its own noise). Use the host's index when each host samples its
    own local batch in a separate program.
    """
    process_index = jax.process_index() if process_index is None else process_index
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.fold_in(key, process_index)
