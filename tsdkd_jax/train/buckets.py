"""Score only what was sampled: a step's responses cut to the smallest length bucket that holds them.

The sampler returns [B, max_new_tokens] responses, but every row may have ended long before the cap. After
sampling, rollout.step_batch cuts the responses (ids and mask) to `cut_length`: the longest response of the
GLOBAL batch rounded up to a multiple of the unit `sampling.length_bucket`, at most the cap. The scoring pass
(teacher and student) and the loss then run on that length. The longest length is read from the globally
sharded mask (a replicated scalar), so every host cuts to the same length and runs the same program.

Why a multiple of a unit (not a power of two): the number of compiled train-step shapes is at most
ceil(max_new_tokens / unit) and the padding wasted is below one unit, against log2 shapes but up to 2× the
tokens for powers of two; a unit of 64 keeps both small for the caps used here (256-1024 → 4-16 shapes).

Which grid each variant uses (`sampling.length_bucket` = 0, the default, picks per method):
- tsdkd_official: unit 1. Its EM set counts padded grid positions (SPEC.md), and the released run's grid is
  the longest response of its batch (HF generate stops when every row has ended), so unit 1 reproduces that
  grid exactly; it compiles one step per distinct longest length.
- every other method: unit 64. Their losses count masked tokens only, so their values do not depend on the
  grid: the cut step's loss equals the uncut one's (tests/train/test_buckets.py).
Set it to max_new_tokens to score the whole cap every step (the behaviour before the cut).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_UNIT = 64
GRID_UNITS = {"tsdkd_official": 1}  # methods whose loss depends on the padded grid: the released grid


def unit(config) -> int:
    """The bucket unit of `config`: sampling.length_bucket, or the method's default when it is 0."""
    return int(config.sampling.length_bucket) or GRID_UNITS.get(config.method, DEFAULT_UNIT)


def cut_length(longest: int, unit_: int, cap: int) -> int:
    """The smallest multiple of `unit_` ≥ `longest` (at least one unit), capped at `cap`."""
    return min(cap, max(1, -(-longest // unit_)) * unit_)


def longest_response(mask: jax.Array) -> int:
    """1 + the last masked position of any row of the (global) [B, N] response mask; 0 when all are empty."""
    last = jnp.max(jnp.where(mask > 0, jnp.arange(1, mask.shape[1] + 1), 0))
    return int(last)  # a replicated scalar: every host reads the same value


def cut(tokens: jax.Array, mask: jax.Array, config) -> tuple[jax.Array, jax.Array]:
    """The responses cut to their bucket (unchanged when it is the whole width)."""
    n = cut_length(longest_response(mask), unit(config), tokens.shape[1])
    if n == tokens.shape[1]:
        return tokens, mask
    return tokens[:, :n], mask[:, :n]
