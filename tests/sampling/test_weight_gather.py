"""The sampler's weights: a compute-dtype copy gathered once per call (gather_weights=True), or left in their
shards (False). Both decode what the stored weights decode; the reference is the plain path that reads the
stored float32 weights and casts them at use (no mesh, gather_weights=False)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf
from flax import nnx

from tsdkd_jax import parallel, sampling
from tsdkd_jax.models import Decoder, ModelConfig

gen = importlib.import_module("tsdkd_jax.sampling.generate")  # the module (sampling.generate is the function)

# Qwen3: q/k norms (read in float32, so kept) besides the pre-norms and the final norm.
CFG = ModelConfig.from_hf(tiny_hf.config("qwen3", **tiny_hf.SMALL, vocab_size=128).to_dict())
KW = {"max_new_tokens": 8, "eos_token_ids": (5,)}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return sampling.pad_batch(
        [rng.integers(6, 128, n).tolist() for n in (3, 8, 1, 5, 6, 2, 7, 4)], multiple=8
    )


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh(data=2, fsdp=2, tensor=2)


def _model(dtype, mesh=None):
    model = Decoder(CFG, rngs=nnx.Rngs(0), dtype=dtype)  # float32 params, as the student's master copy
    return model if mesh is None else parallel.shard_model(model, mesh)


def _spy(monkeypatch):
    """Records the arguments `generate` hands the compiled program."""
    calls = []
    real = gen._generate_jit

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "_generate_jit", spy)
    return calls


def _leaves(state):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}


def test_gathered_copy_is_compute_dtype_shards(monkeypatch, batch, mesh):
    model = _model(jnp.bfloat16, mesh)
    calls = _spy(monkeypatch)
    out = sampling.generate(model, batch.ids, batch.mask, temperature=0.0, mesh=mesh, **KW)
    stored, handed = _leaves(nnx.state(model)), _leaves(calls[0][0][1])
    assert stored.keys() == handed.keys()
    for name, x in stored.items():
        want = jnp.float32 if "norm" in name else jnp.bfloat16  # norm scales are read in float32
        assert handed[name].dtype == want, name
        # Cast where the shards lie: the program receives shards (it all-gathers them itself) ...
        assert handed[name].sharding.is_equivalent_to(x.sharding, x.ndim), name
    # ... so a device receives half the bytes of its float32 matrices.
    per_device = {
        name: x.addressable_shards[0].data.nbytes // (1 if "norm" in name else 2)
        for name, x in stored.items()
    }
    assert sum(h.addressable_shards[0].data.nbytes for h in handed.values()) == sum(per_device.values())

    reference = sampling.generate(_model(jnp.bfloat16), batch.ids, batch.mask, temperature=0.0,
                                  gather_weights=False, **KW)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(reference.tokens))
    np.testing.assert_array_equal(np.asarray(out.mask), np.asarray(reference.mask))


def test_cast_copy_is_exact(batch):
    """Without a mesh the copy only moves the cast the forward does anyway: bit-identical samples."""
    model = _model(jnp.bfloat16)
    kw = {"top_k": 20, "top_p": 0.9, "rng": sampling.sample_key(0, 3, 0), **KW}
    copied = sampling.generate(model, batch.ids, batch.mask, gather_weights=True, **kw)
    stored = sampling.generate(model, batch.ids, batch.mask, gather_weights=False, **kw)
    np.testing.assert_array_equal(np.asarray(copied.tokens), np.asarray(stored.tokens))
    np.testing.assert_array_equal(np.asarray(copied.logprobs), np.asarray(stored.logprobs))


def test_float32_compute_makes_no_copy(monkeypatch, batch):
    model = _model(jnp.float32)
    calls = _spy(monkeypatch)
    sampling.generate(model, batch.ids, batch.mask, temperature=0.0, **KW)
    for name, x in _leaves(nnx.state(model)).items():
        assert _leaves(calls[0][0][1])[name] is x, name  # the stored arrays themselves


def test_gather_off_equals_gather_on_and_holds_less(monkeypatch, batch, mesh):
    model = _model(jnp.float32, mesh)
    program = gen._generate_jit
    calls = _spy(monkeypatch)
    for kw in ({"temperature": 0.0}, {"top_k": 10, "rng": sampling.sample_key(0, 1, 0)}):
        on = sampling.generate(model, batch.ids, batch.mask, mesh=mesh, **kw, **KW)
        off = sampling.generate(model, batch.ids, batch.mask, mesh=mesh, gather_weights=False, **kw, **KW)
        np.testing.assert_array_equal(np.asarray(off.tokens), np.asarray(on.tokens))
        np.testing.assert_array_equal(np.asarray(off.mask), np.asarray(on.mask))
        np.testing.assert_allclose(np.asarray(off.logprobs), np.asarray(on.logprobs), atol=1e-5)
    (on_args, on_kw), (off_args, off_kw) = calls[:2]
    temp = [program.lower(*a, **k).compile().memory_analysis().temp_size_in_bytes
            for a, k in ((on_args, on_kw), (off_args, off_kw))]  # fmt: skip
    # Gathering adds, per device, the other fsdp shards of every weight for the whole call; streaming holds
    # one block's (or the vocab table's) at a time, so it saves most of that.
    added = sum(
        x.addressable_shards[0].data.nbytes * (mesh.shape["fsdp"] - 1)
        for x in jax.tree.leaves(nnx.state(model))
        if "fsdp" in jax.tree.leaves(tuple(x.sharding.spec))
    )
    assert temp[0] - temp[1] >= added // 2, (temp, added)
