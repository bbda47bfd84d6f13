"""8 fake devices, mesh (data=2, fsdp=2, tensor=2): params land in their logical shardings; same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf
from flax import nnx
from jax.sharding import PartitionSpec as P

from tsdkd_jax import models
from tsdkd_jax.parallel import DEFAULT_RULES, logical_to_sharding, make_mesh, shard_model
from tsdkd_jax.weights.reader import CheckpointReader


def test_make_mesh_fills_and_validates():
    mesh = make_mesh(data=-1, fsdp=2, tensor=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="needs 12 devices, have 8"):
        make_mesh(data=3, fsdp=2, tensor=2)
    spec = logical_to_sharding(("batch", "length"), mesh, DEFAULT_RULES, (4, 7)).spec
    assert spec == P(("data", "fsdp"), None)


def test_sharded_load_places_params_and_matches_unsharded(tmp_path, monkeypatch):
    hf = tiny_hf.build("qwen2_tied")  # num_kv_heads=1: not divisible by tensor=2, so replicated
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    reads = []
    original = CheckpointReader.read

    def recording_read(self, name, index=None):
        out = original(self, name, index)
        reads.append((name, out.shape))
        return out

    monkeypatch.setattr(CheckpointReader, "read", recording_read)
    sharded = models.from_pretrained(tmp_path, mesh=mesh)
    # Each device block reads only its slice: q_proj [N*H=64, D=64] split over heads (tensor) and D (fsdp).
    assert {shape for name, shape in reads if name.endswith("0.self_attn.q_proj.weight")} == {(32, 32)}
    assert {shape for name, shape in reads if name == "model.embed_tokens.weight"} == {(128, 32)}
    expected = {
        "embed": P("tensor", "fsdp"),
        "final_norm": P(None),
        "layers.q": P(None, "fsdp", "tensor", None),
        "layers.k": P(None, "fsdp", None, None),
        "layers.o": P(None, "tensor", None, "fsdp"),
        "layers.down": P(None, "tensor", "fsdp"),
        "layers.q_bias": P(None, "tensor", None),
    }
    for path, spec in expected.items():
        var = sharded
        for part in path.split("."):
            var = getattr(var, part)
        assert var.get_value().sharding.spec == spec, path
        assert var.get_value().sharding.mesh == mesh

    plain = models.from_pretrained(tmp_path)
    ids, mask = tiny_hf.left_padded_batch(256, lengths=(12, 9, 5, 12))
    graphdef, state = nnx.split(sharded)

    @jax.jit
    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask)

    batch = logical_to_sharding(("batch", "length"), mesh)
    got = forward(state, jax.device_put(ids, batch), jax.device_put(mask, batch))
    want = plain(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)

    # shard_model moves an unsharded model onto the same layout.
    moved = shard_model(plain, mesh)
    assert moved.layers.q.get_value().sharding.spec == P(None, "fsdp", "tensor", None)
