"""Sampling with parameters sharded over a (data, fsdp, tensor) mesh of 8 fake CPU devices equals unsharded."""

import jax
import numpy as np
import tiny_hf
from flax import nnx

from tsdkd_jax import parallel, sampling
from tsdkd_jax.models import Decoder, ModelConfig

CFG = ModelConfig.from_hf(tiny_hf.config("qwen2_untied", **tiny_hf.SMALL, vocab_size=96).to_dict())


def test_sharded_equals_unsharded():
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    b = sampling.pad_batch([rng.integers(1, 96, n).tolist() for n in (3, 8, 1, 5, 6, 2, 7, 4)], multiple=8)
    kw = {"max_new_tokens": 8, "eos_token_ids": (5,)}
    model = Decoder(CFG, rngs=nnx.Rngs(0))
    greedy = sampling.generate(model, b.ids, b.mask, temperature=0.0, **kw)
    sampled = sampling.generate(model, b.ids, b.mask, top_k=10, rng=sampling.sample_key(0, 1, 0), **kw)

    mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
    sharded_model = parallel.shard_model(Decoder(CFG, rngs=nnx.Rngs(0)), mesh)
    assert not sharded_model.layers.q.get_value().sharding.is_fully_replicated
    g = sampling.generate(sharded_model, b.ids, b.mask, temperature=0.0, mesh=mesh, **kw)
    assert g.tokens.sharding.spec[0] == ("data", "fsdp")  # batch split over the data axes
    np.testing.assert_array_equal(np.asarray(g.tokens), np.asarray(greedy.tokens))
    np.testing.assert_array_equal(np.asarray(g.mask), np.asarray(greedy.mask))
    # Same key, same samples: the per-row noise does not depend on the partitioning.
    s = sampling.generate(
        sharded_model, b.ids, b.mask, top_k=10, rng=sampling.sample_key(0, 1, 0), mesh=mesh, **kw
    )
    np.testing.assert_array_equal(np.asarray(s.tokens), np.asarray(sampled.tokens))
    np.testing.assert_allclose(np.asarray(s.logprobs), np.asarray(sampled.logprobs), atol=1e-5)
