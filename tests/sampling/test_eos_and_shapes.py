"""EOS handling, early exit, static shapes (bucketing, no recompiles) and deterministic keys."""

import jax
import numpy as np
import pytest
from flax import nnx
from programs import sampler_programs

from tsdkd_jax import sampling
from tsdkd_jax.models import Decoder, ModelConfig

CFG = ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
)
N, PAD = 12, 0


@pytest.fixture(scope="module")
def model():
    return Decoder(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(1, 64, n).tolist() for n in (5, 9, 2, 7)]


def _first(row, eos):
    hits = np.flatnonzero(np.isin(row, eos))
    return int(hits[0]) if len(hits) else None


def test_rows_stop_independently(model, prompts):
    b = sampling.pad_batch(prompts, multiple=16)
    free = np.asarray(sampling.generate(model, b.ids, b.mask, max_new_tokens=N, temperature=0.0).tokens)
    eos = (int(free[0, 3]), int(free[2, 6]))  # row 0 ends by step 3, row 2 by step 6
    out = sampling.generate(model, b.ids, b.mask, max_new_tokens=N, temperature=0.0, eos_token_ids=eos)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    assert tokens.shape == (4, N) and tokens.dtype == np.int32
    ends = []
    for r in range(4):
        stop = _first(free[r], eos)
        n = N if stop is None else stop + 1  # the EOS itself is part of the response
        ends.append(n)
        np.testing.assert_array_equal(tokens[r, :n], free[r, :n])
        assert np.all(tokens[r, n:] == PAD)
        np.testing.assert_array_equal(mask[r], np.arange(N) < n)
    assert ends[0] <= 4 and ends[2] <= 7
    assert int(out.num_steps) == max(ends) <= N


def test_loop_exits_early_when_all_rows_are_done(model, prompts):
    b = sampling.pad_batch(prompts, multiple=16)
    free = np.asarray(sampling.generate(model, b.ids, b.mask, max_new_tokens=N, temperature=0.0).tokens)
    eos = tuple(int(t) for t in free[:, 1])  # every row emits one of these at step <= 1
    out = sampling.generate(model, b.ids, b.mask, max_new_tokens=N, temperature=0.0, eos_token_ids=eos)
    mask = np.asarray(out.mask)
    assert int(out.num_steps) == mask.sum(1).max() <= 2
    assert np.all(mask[:, 2:] == 0) and np.all(np.asarray(out.tokens)[:, 2:] == PAD)


def test_sampled_rows_never_exceed_max_new_tokens(model, prompts):
    b = sampling.pad_batch(prompts, multiple=16)
    for step in range(3):
        out = sampling.generate(
            model,
            b.ids,
            b.mask,
            max_new_tokens=N,
            eos_token_ids=(1, 2, 3, 4, 5, 6, 7, 8),
            rng=sampling.sample_key(1, step, 0),
        )
        tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
        assert tokens.shape == (4, N) and 1 <= int(out.num_steps) <= N
        assert int(out.num_steps) == mask.sum(1).max()
        for r in range(4):
            n = mask[r].sum()
            assert np.all(mask[r, :n] == 1) and np.all(tokens[r, n:] == PAD)
            assert _first(tokens[r, :n], range(1, 9)) in (None, n - 1)  # only the last kept token is EOS


def test_pad_batch_left_pads_to_bucket():
    b = sampling.pad_batch([[5, 6, 7], [8]], pad_id=9, batch_size=4, multiple=8)
    assert b.ids.shape == (4, 8) and b.num_rows == 2
    np.testing.assert_array_equal(b.ids[0], [9, 9, 9, 9, 9, 5, 6, 7])
    np.testing.assert_array_equal(b.mask[1], [0] * 7 + [1])
    assert not b.mask[2:].any()
    # From right-padded arrays, with the power-of-two policy.
    ids = np.array([[1, 2, 3, 4, 5, 0], [6, 7, 0, 0, 0, 0]])
    b = sampling.pad_batch(ids, ids > 0, policy="pow2")
    assert b.ids.shape == (2, 8)
    np.testing.assert_array_equal(b.ids[1], [0] * 6 + [6, 7])
    with pytest.raises(ValueError, match="max_len"):
        sampling.pad_batch([[1] * 10], max_len=8)
    with pytest.raises(ValueError, match="batch_size"):
        sampling.pad_batch([[1], [2]], batch_size=1)


def test_right_padded_prompts_are_rejected(model):
    ids = np.array([[1, 2, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        sampling.generate(model, ids, (ids > 0).astype(np.int32), max_new_tokens=2, temperature=0.0)


def test_one_compile_per_bucket(model):
    rng = np.random.default_rng(3)
    batches = [[rng.integers(1, 64, n).tolist() for n in rng.integers(1, 17, 3)] for _ in range(5)]
    knobs = [
        (0.0, 0, 1.0, ()),
        (1.0, 0, 1.0, (3,)),
        (0.8, 5, 1.0, (3, 4)),
        (1.2, 0, 0.9, ()),
        (0.5, 7, 0.5, (9,)),
    ]
    start = None
    for step, (batch, (t, k, p, eos)) in enumerate(zip(batches, knobs)):
        b = sampling.pad_batch(batch, batch_size=4, multiple=16)
        assert b.ids.shape == (4, 16)
        out = sampling.generate(
            model,
            b.ids,
            b.mask,
            max_new_tokens=6,
            temperature=t,
            top_k=k,
            top_p=p,
            eos_token_ids=eos,
            rng=sampling.sample_key(0, step, 0),
        )
        assert np.all(np.isfinite(np.asarray(out.logprobs)))  # filler row included
        start = sampler_programs() if start is None else start
    assert sampler_programs() == start  # varied lengths, knobs and EOS sets: one program
    b = sampling.pad_batch(batches[0], batch_size=4, multiple=16)
    longer = sampling.pad_batch([[1] * 20], batch_size=4, multiple=16)
    sampling.generate(model, longer.ids, longer.mask, max_new_tokens=6, temperature=0.0)
    assert sampler_programs() == start + 1  # a new bucket is a new program


def test_same_seed_same_samples(model, prompts):
    b = sampling.pad_batch(prompts, multiple=16)

    def run(seed, step, host):
        key = sampling.sample_key(seed, step, host)
        out = sampling.generate(model, b.ids, b.mask, max_new_tokens=N, top_p=0.95, rng=key)
        return np.asarray(out.tokens)

    first = run(5, 2, 0)
    np.testing.assert_array_equal(first, run(5, 2, 0))
    assert not np.array_equal(first, run(5, 3, 0))
    assert not np.array_equal(first, run(5, 2, 1))
    assert not np.array_equal(first, run(6, 2, 0))
    assert (
        jax.random.key_data(sampling.sample_key(5, 2, 0)).tolist()
        == jax.random.key_data(sampling.sample_key(5, 2, 0)).tolist()
    )
