"""Greedy generation and per-token log-probs against transformers' PyTorch models (the independent reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf
import torch

from tsdkd_jax import models, sampling

N = 10


def _load(family, tmp_path):
    hf = tiny_hf.build(family)
    hf.generation_config.eos_token_id = None  # else min_new_tokens would mask that id's logit
    hf.save_pretrained(tmp_path)
    return hf, models.from_pretrained(tmp_path)


def _hf_greedy(hf, ids, mask):
    out = hf.generate(
        torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        do_sample=False,
        max_new_tokens=N,
        min_new_tokens=N,
        pad_token_id=0,
    )
    return out[:, ids.shape[1] :].numpy()


@pytest.mark.parametrize("family", ["qwen2_untied", "gemma2"])
def test_greedy_matches_transformers_on_left_padding(family, tmp_path):
    hf, model = _load(family, tmp_path)
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size, lengths=(12, 9, 5, 1))
    ref = _hf_greedy(hf, ids, mask)
    # transformers derives positions from the attention mask in generate: batched == each row alone.
    for b in range(len(ids)):
        row = ids[b][mask[b].astype(bool)][None]
        np.testing.assert_array_equal(_hf_greedy(hf, row, np.ones_like(row))[0], ref[b])
    out = sampling.generate(model, ids, mask, max_new_tokens=N, temperature=0.0, pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)
    assert np.all(np.asarray(out.mask) == 1) and int(out.num_steps) == N
    # top-1 = greedy: top_k=1 sampling at any temperature picks the argmax.
    top1 = sampling.generate(model, ids, mask, max_new_tokens=N, top_k=1, rng=jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(top1.tokens), ref)
    np.testing.assert_allclose(np.asarray(top1.logprobs), 0.0, atol=1e-6)


def _hf_logprobs(hf, ids, mask, out, temperature=1.0, top_k=0):
    """float64 log-probs of the sampled tokens from a teacher-forced HF forward on prompt + response."""
    full_ids = np.concatenate([ids, np.asarray(out.tokens)], axis=1)
    full_mask = np.concatenate([mask, np.asarray(out.mask)], axis=1)
    logits = tiny_hf.reference_logits(hf, full_ids, full_mask).astype(np.float64)
    T = ids.shape[1]
    x = logits[:, T - 1 : -1] / temperature  # position t predicts token t + 1
    if top_k:
        kth = np.sort(x, axis=-1)[..., -top_k][..., None]
        x = np.where(x >= kth, x, -np.inf)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(out.tokens)[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 20)])
def test_logprobs_equal_teacher_forced_forward(temperature, top_k, tmp_path):
    hf, model = _load("qwen2_untied", tmp_path)
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size, lengths=(7, 3, 5))
    out = sampling.generate(
        model,
        ids,
        mask,
        max_new_tokens=N,
        temperature=temperature,
        top_k=top_k,
        eos_token_ids=(7, 11, 13),
        rng=sampling.sample_key(0, 0, 0),
    )
    m = np.asarray(out.mask).astype(bool)
    ref = _hf_logprobs(hf, ids, mask, out, temperature, top_k)
    np.testing.assert_allclose(np.asarray(out.logprobs)[m], ref[m], atol=2e-5)
    assert np.all(np.asarray(out.logprobs)[~m] == 0.0)
    assert np.all(jnp.isfinite(out.logprobs))
