"""Speculative KD's interleaved sampler: the keep/replace rule on fixed logits (by hand, a NumPy reference, the
distribution of its draws), and the compiled two-cache loop against a step-by-step loop over full forwards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tsdkd_jax import sampling
from tsdkd_jax.models import Decoder, ModelConfig
from tsdkd_jax.sampling import interleaved

GREEDY = sampling.make_params(5, temperature=0.0)
K0, K1 = jax.random.key(0), jax.random.key(1)  # the rule's two keys (unused by greedy rows)


def test_rule_by_hand():
    """Greedy rows: proposal = student argmax, replacement = teacher argmax."""
    t = np.array([[5, 4, 3, 2, 1, 0]] * 2 + [[3, 3, 3, 0, 0, 0]] + [[5, 4, 3, 2, 1, 0]] * 2, np.float32)
    s = np.full((5, 6), -1.0, np.float32)
    s[np.arange(5), [1, 3, 2, 0, 5]] = 1.0  # the student's argmax per row
    k = np.array([2, 2, 1, 0, 6], np.int32)
    tok, kept = interleaved.interleave(jnp.asarray(s), jnp.asarray(t), GREEDY, K0, K1, jnp.asarray(k), 0)
    # row 0: 1 is the teacher's 2nd best, K = 2 → kept; row 1: 3 is its 4th → replaced by its argmax 0;
    # row 2: 2 ties the teacher's best, K = 1 → kept (ties at the K-th value count as in the top K);
    # row 3: K = 0 replaces even the teacher's own argmax; row 4: K = V keeps anything.
    assert np.asarray(tok).tolist() == [1, 0, 2, 0, 5]
    assert np.asarray(kept).tolist() == [True, False, True, False, True]


def test_rule_equals_numpy_reference():
    rng = np.random.default_rng(0)
    b, v = 256, 40
    s = rng.standard_normal((b, v)).astype(np.float32) * 2
    t = rng.standard_normal((b, v)).astype(np.float32) * 2
    k = rng.integers(0, v + 2, b).astype(np.int32)
    params = sampling.make_params(b, temperature=0.0)
    tok, kept = interleaved.interleave(jnp.asarray(s), jnp.asarray(t), params, K0, K1, jnp.asarray(k), 0)
    proposal, replacement = s.argmax(1), t.argmax(1)
    want_kept = np.array([proposal[i] in np.argsort(-t[i])[: k[i]] for i in range(b)])
    np.testing.assert_array_equal(np.asarray(kept), want_kept)
    np.testing.assert_array_equal(np.asarray(tok), np.where(want_kept, proposal, replacement))
    assert 0.2 < want_kept.mean() < 0.8  # both branches are exercised


def test_sampled_rule_has_the_interleaved_distribution():
    """P(y) = q(y)·[y ∈ top_K(p)] + (1 − q(top_K(p)))·p(y) in float64 (independent proposal and
    replacement draws); rows are independent draws (each row folds its own id into the keys)."""
    n = 20_000
    s_row = np.array([0.0, 1.0, 1.5, 0.5, -0.5])
    t_row = np.array([2.0, 1.5, 0.0, -0.5, -1.0])  # top 2 = {0, 1}
    s = jnp.asarray(np.tile(s_row, (n, 1)), jnp.float32)
    t = jnp.asarray(np.tile(t_row, (n, 1)), jnp.float32)
    params = sampling.make_params(n, temperature=1.0)
    tok, kept = interleaved.interleave(s, t, params, jax.random.key(5), jax.random.key(6), 2, 0)
    q, p = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (s_row, t_row))
    in_top = np.array([1, 1, 0, 0, 0], bool)
    want = np.where(in_top, q, 0.0) + (1 - q[in_top].sum()) * p
    freq = np.bincount(np.asarray(tok), minlength=5) / n
    # E[TV] <= 0.5·sqrt(V/n) = 0.0079; TV moves by <= 1/n per draw: P(TV > E + 0.02) <= exp(-2n·0.02²) ~ 1e-7.
    assert 0.5 * np.abs(freq - want).sum() < 0.5 * np.sqrt(5 / n) + 0.02, (freq, want)
    assert abs(np.asarray(kept).mean() - q[in_top].sum()) < 5 * np.sqrt(0.25 / n)


# ---- the compiled loop ---------------------------------------------------------------------------------

S_CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8)  # fmt: skip
T_CFG = ModelConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=12)  # fmt: skip
N, PAD, EOS, K = 8, 0, (3, 7, 11, 19, 23), 12


@pytest.fixture(scope="module")
def pair():
    return Decoder(S_CFG, rngs=nnx.Rngs(0)), Decoder(T_CFG, rngs=nnx.Rngs(1))


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return sampling.pad_batch([rng.integers(1, 64, n).tolist() for n in (5, 9, 2, 7, 4, 6)], multiple=16)


def _reference(student, teacher, ids, mask, temperature, rng):
    """Step by step over full forward passes (no cache) with the rule in NumPy; the sampled rows' Gumbel
    noise is drawn from the keys the module docstring names."""
    b, p = ids.shape
    fwd = jax.jit(lambda m, x, a: m(x, a))
    seq = np.concatenate([ids, np.full((b, N), PAD, np.int32)], 1)
    att = np.concatenate([mask, np.zeros((b, N), np.int32)], 1)
    tokens, kept = np.full((b, N), PAD), np.zeros((b, N), bool)
    done = np.zeros(b, bool)
    for i in range(N):
        s_log = np.asarray(fwd(student, seq, att))[:, p - 1 + i].astype(np.float64)
        t_log = np.asarray(fwd(teacher, seq, att))[:, p - 1 + i].astype(np.float64)
        for r in np.flatnonzero(~done):
            prop, repl = s_log[r].argmax(), t_log[r].argmax()
            if temperature > 0:
                noise = [np.asarray(jax.random.gumbel(jax.random.fold_in(jax.random.fold_in(
                    jax.random.fold_in(rng, j), i), r), (64,)), np.float64) for j in (0, 1)]  # fmt: skip
                prop, repl = (np.argmax(x / temperature - np.logaddexp.reduce(x / temperature) + g)
                              for x, g in zip((s_log[r], t_log[r]), noise))  # fmt: skip
            kept[r, i] = np.sum(t_log[r] > t_log[r, prop]) < K
            tokens[r, i] = prop if kept[r, i] else repl
            seq[r, p + i], att[r, p + i] = tokens[r, i], 1
        done |= np.isin(tokens[:, i], EOS)
    return tokens, kept


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compiled_loop_equals_step_by_step_reference(pair, prompts, temperature):
    rng = jax.random.key(4)
    out = interleaved.generate_interleaved(
        *pair, prompts.ids, prompts.mask, accept_top_k=K, max_new_tokens=N, temperature=temperature,
        eos_token_ids=EOS, pad_token_id=PAD, rng=rng,
    )  # fmt: skip
    tokens, kept = _reference(*pair, prompts.ids, prompts.mask, temperature, rng)
    np.testing.assert_array_equal(np.asarray(out.tokens), tokens)
    np.testing.assert_array_equal(np.asarray(out.kept).astype(bool), kept)
    ends = [int(np.flatnonzero(np.isin(row, EOS))[0]) + 1 if np.isin(row, EOS).any() else N for row in tokens]
    mask = np.arange(N)[None, :] < np.array(ends)[:, None]  # up to and including the first EOS
    np.testing.assert_array_equal(np.asarray(out.mask).astype(bool), mask)
    assert 0 < kept[mask].mean() < 1 and not mask.all()  # kept and replaced tokens, and early EOS


def test_bad_k_is_rejected(pair, prompts):
    for bad in (-1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="accept_top_k"):
            interleaved.generate_interleaved(*pair, prompts.ids, prompts.mask, accept_top_k=bad,
                                             max_new_tokens=N, temperature=0.0)  # fmt: skip
