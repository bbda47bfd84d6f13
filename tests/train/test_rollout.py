"""The loop's randomness is the train state's saved key (state["rng"]): the sampler's key and the λ coin of a
step fold the step into it (big_vision's fold_in), so a checkpoint carries everything a resume draws."""

import jax
import numpy as np

from tsdkd_jax import sampling, train
from tsdkd_jax.train import rollout


def test_sampler_key_is_the_state_key_folded_with_the_step(tiny_config, tmp_path):
    t = train.Trainer(tiny_config(mesh__devices=1), str(tmp_path))
    try:
        host = next(t.iterator)
        t.state = {**t.state, "rng": jax.random.key_data(jax.random.key(123))}  # not the config's seed
        batch, _, sampled = t.make_batch(3, host)
        assert sampled  # λ = 1: the student samples every step
        prompts = [t.to_global(host[k]) for k in ("prompt_ids", "prompt_mask")]
        params = t.state["params"]
        want, _ = t.sample(t.graphdef, params, *prompts, sampling.sample_key(123, 3, 0))
        seed_key, _ = t.sample(t.graphdef, params, *prompts, sampling.sample_key(t.config.seed, 3, 0))
        np.testing.assert_array_equal(np.asarray(batch["response_ids"]), np.asarray(want))
        assert not np.array_equal(np.asarray(want), np.asarray(seed_key))  # the key decides the tokens
    finally:
        t.close()


def test_lambda_coin_follows_lambda_and_the_key():
    a, b = (np.asarray(jax.random.key_data(jax.random.key(seed))) for seed in (0, 1))
    draws = [rollout.on_policy(a, step, 0.3) for step in range(1, 401)]
    assert abs(np.mean(draws) - 0.3) < 0.12  # ± 5 binomial standard deviations (0.023)
    assert draws == [rollout.on_policy(a, step, 0.3) for step in range(1, 401)]  # a function of (key, step)
    assert draws != [rollout.on_policy(b, step, 0.3) for step in range(1, 401)]
    assert all(rollout.on_policy(a, s, 1.0) for s in range(5)) and not any(
        rollout.on_policy(a, s, 0.0) for s in range(5)
    )
