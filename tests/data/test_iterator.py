"""Batches: padding and bucketing, determinism by seed, disjoint host shards, resume = uninterrupted."""

import json

import numpy as np
import pytest

from tsdkd_jax import data

PAD = 0


def _examples(n, with_responses=True, rng_seed=0):
    """Synthetic token ids (1..99) of varied lengths; the iterator never looks inside them."""
    rng = np.random.default_rng(rng_seed)
    prompts = [rng.integers(1, 100, rng.integers(3, 40)).astype(np.int32) for _ in range(n)]
    responses = [rng.integers(1, 100, rng.integers(1, 12)).astype(np.int32) for _ in range(n)]
    return data.PromptSet(prompts, responses if with_responses else None, np.arange(n) * 10)


def _iterator(examples, **kw):
    args = {"batch_size": 8, "seed": 0, "max_prompt_len": 48, "max_response_len": 12, "pad_id": PAD}
    return data.PromptIterator(examples, **{"bucket_multiple": 16, **args, **kw})


def _key(batch, examples):
    """Which examples a batch holds, recovered from its unpadded prompt tokens."""
    by_tokens = {tuple(p): i for i, p in enumerate(examples.prompts)}
    return [by_tokens[tuple(ids[m == 1])] for ids, m in zip(batch["prompt_ids"], batch["prompt_mask"])]


def test_left_padded_prompts_right_padded_responses_bucketed_shapes():
    ex = _examples(20)
    it = _iterator(ex)
    for _ in range(2 * it.steps_per_epoch):
        batch = next(it)
        idx = _key(batch, ex)
        longest = max(len(ex.prompts[i]) for i in idx)
        assert batch["prompt_ids"].shape == (8, min(48, -(-longest // 16) * 16))
        assert batch["response_ids"].shape == batch["response_mask"].shape == (8, 12)
        assert all(v.dtype == np.int32 for v in batch.values())
        for row, i in enumerate(idx):
            p, r = ex.prompts[i], ex.responses[i]
            L = batch["prompt_ids"].shape[1]
            np.testing.assert_array_equal(batch["prompt_ids"][row], np.r_[np.full(L - len(p), PAD), p])
            np.testing.assert_array_equal(
                batch["prompt_mask"][row], np.r_[np.zeros(L - len(p)), np.ones(len(p))]
            )
            np.testing.assert_array_equal(batch["response_ids"][row], np.r_[r, np.full(12 - len(r), PAD)])
            np.testing.assert_array_equal(
                batch["response_mask"][row], np.r_[np.ones(len(r)), np.zeros(12 - len(r))]
            )
    assert set(next(_iterator(_examples(20, with_responses=False)))) == {"prompt_ids", "prompt_mask"}


@pytest.mark.parametrize(
    "longest, policy, expected",
    [
        (1, "multiple", 64),
        (64, "multiple", 64),
        (65, "multiple", 128),
        (500, "multiple", 384),
        (33, "pow2", 64),
        (32, "pow2", 32),
        (1, "pow2", 1),
        (300, "pow2", 384),
        (5, "max", 384),
    ],
)
def test_bucket_length_policies(longest, policy, expected):
    assert data.bucket_length(longest, max_len=384, policy=policy, multiple=64) == expected


def test_epochs_are_permutations_fixed_by_seed_and_drop_the_remainder():
    ex = _examples(21)
    it = _iterator(ex, seed=3)
    assert it.steps_per_epoch == 2
    epochs = [[i for _ in range(2) for i in _key(next(it), ex)] for _ in range(3)]
    for e, order in enumerate(epochs):
        assert len(set(order)) == 16 and order == list(it.epoch_order(e)[:16])
    assert epochs[0] != epochs[1]
    again = _iterator(ex, seed=3)
    assert [i for _ in range(6) for i in _key(next(again), ex)] == [i for order in epochs for i in order]
    other = _iterator(ex, seed=4)
    assert [i for _ in range(2) for i in _key(next(other), ex)] != epochs[0]
    unshuffled = _iterator(ex, shuffle=False)
    assert _key(next(unshuffled), ex) == list(range(8))


def test_two_hosts_get_disjoint_shards_that_make_up_the_global_batch():
    ex = _examples(37)
    single = _iterator(ex, seed=5)
    hosts = [_iterator(ex, seed=5, process_index=p, process_count=2) for p in range(2)]
    assert hosts[0].local_batch_size == 4 and hosts[0].steps_per_epoch == single.steps_per_epoch == 4
    for _ in range(10):  # crosses two epoch boundaries
        whole = next(single)
        parts = [next(h) for h in hosts]
        a, b = (_key(p, ex) for p in parts)
        assert not set(a) & set(b) and a + b == _key(whole, ex)
        for k in whole:  # same bucket on both hosts (from the global batch) and equal to the global batch
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_resume_from_json_state_equals_uninterrupted():
    ex = _examples(30)
    reference = _iterator(ex, seed=7)
    expected = [next(reference) for _ in range(12)]
    for stop in (0, 2, 3, 7):  # 3 steps per epoch: mid-epoch and exactly at an epoch boundary
        it = _iterator(ex, seed=7)
        for _ in range(stop):
            next(it)
        state = json.loads(json.dumps(it.get_state()))
        resumed = _iterator(ex, seed=123)  # the seed comes back from the state
        resumed.set_state(state)
        for want in expected[stop:]:
            got = next(resumed)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    assert it.get_state() == {"seed": 7, "epoch": 2, "position": 1, "batch_size": 8, "num_examples": 30}


def test_set_state_rejects_a_different_dataset_or_batch_size():
    state = _iterator(_examples(30)).get_state()
    with pytest.raises(ValueError, match="num_examples=30, but this run has num_examples=29"):
        _iterator(_examples(29)).set_state(state)
    with pytest.raises(ValueError, match="batch_size=8, but this run has batch_size=10"):
        _iterator(_examples(30), batch_size=10).set_state(state)
    with pytest.raises(ValueError, match=r"lacks \['position'\]"):
        _iterator(_examples(30)).set_state({k: v for k, v in state.items() if k != "position"})


def test_iterator_argument_errors():
    with pytest.raises(ValueError, match="batch_size=6 is not a positive multiple of the process count 4"):
        _iterator(_examples(30), batch_size=6, process_count=4)
    with pytest.raises(ValueError, match="5 training examples are fewer than data.batch_size=8"):
        _iterator(_examples(5))
    with pytest.raises(ValueError, match="more than data.max_prompt_len=16"):
        _iterator(_examples(30), max_prompt_len=16)


def test_eval_batches_cover_every_example_once_with_a_mask():
    ex = _examples(19)
    seen = []
    for p in range(2):
        for batch in data.eval_batches(
            ex,
            batch_size=8,
            max_prompt_len=48,
            max_response_len=12,
            pad_id=PAD,
            process_index=p,
            process_count=2,
        ):
            assert batch["prompt_ids"].shape[0] == batch["example_mask"].shape[0] == 4
            seen += [i for i, m in zip(_key(batch, ex), batch["example_mask"]) if m]
    assert sorted(seen) == list(range(19))


def test_end_to_end_from_config(chat_tokenizer, write_jsonl):
    rows = [{"prompt": f"what is {i} plus 1?", "response": f"{i + 1}"} for i in range(21)]
    cfg = data.default_config()
    cfg.update(
        path=write_jsonl(rows), response_field="response", batch_size=4, holdout_size=4, max_response_len=8
    )
    train, heldout, _ = data.load_prompt_data(cfg, chat_tokenizer)
    assert len(heldout) == 4 and len(train) == 17
    pad = data.resolve_pad_id(cfg.pad_id, chat_tokenizer, data.eos_token_ids(None, chat_tokenizer))
    assert pad == chat_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    it = data.PromptIterator.from_config(train, cfg, pad_id=pad, process_index=1, process_count=2)
    batch = next(it)
    assert (
        it.steps_per_epoch == 4
        and batch["prompt_ids"].shape == (2, 64)
        and batch["response_ids"].shape == (2, 8)
    )
    for ids, m in zip(batch["prompt_ids"], batch["prompt_mask"]):
        assert chat_tokenizer.decode(ids[m == 1]).endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert (ids[m == 0] == pad).all()
