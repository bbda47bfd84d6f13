"""LoRA adapters on the decoder, checked against transformers + PEFT (the independent reference)."""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import peft
import pytest
import tiny_hf
import torch
import transformers
from flax import nnx

from tsdkd_jax import models, parallel
from tsdkd_jax.models import lora
from tsdkd_jax.parallel.sharding import logical_to_spec
from tsdkd_jax.weights import peft_lora


def _lora_config(rank=4, alpha=8.0, targets="q,k,v,o,gate,up,down"):
    c = lora.default_config()
    c.rank, c.alpha, c.targets = rank, alpha, targets
    return c


def _randomise_b(model, seed=1):
    """Non-zero B everywhere, as after training (a fresh adapter's B is zero)."""
    rng = np.random.default_rng(seed)
    for t in model.lora.targets:
        b = getattr(model.lora, f"{t}_b")
        b.set_value(jnp.asarray(0.3 * rng.standard_normal(b.get_value().shape), jnp.float32))


def test_fresh_adapters_leave_the_logits_unchanged(tmp_path):
    hf = tiny_hf.build("qwen2_untied")
    hf.save_pretrained(tmp_path)
    model = models.from_pretrained(tmp_path)
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    before = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    lora.add_adapters(model, _lora_config(), seed=0)
    assert np.abs(np.asarray(model.lora.q_a.get_value())).max() > 0  # A is random, B is zero
    after = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    # x·A·0 adds exact zeros; XLA compiles the longer program with other fusions, so rounding may differ.
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("family", "targets"), [("qwen3", "q,k,v,o,gate,up,down"), ("gemma3", "q,v,down")])
def test_peft_adapter_and_merged_weights_match_the_adapted_model(tmp_path, family, targets):
    hf = tiny_hf.build(family)
    hf.save_pretrained(tmp_path / "base")
    model = models.from_pretrained(tmp_path / "base")
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    base_ref = tiny_hf.reference_logits(hf, ids, mask)
    lora.add_adapters(model, _lora_config(rank=3, alpha=6.0, targets=targets), seed=0)
    _randomise_b(model)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    assert tiny_hf.rel_l2(ours, base_ref, mask) > 1e-2  # the adapters change the model

    # PEFT's LoRA layers on the unchanged transformers model add the same update.
    peft_lora.save_adapter(model, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    adapted = peft.PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "adapter").eval()
    assert tiny_hf.rel_l2(ours, tiny_hf.reference_logits(adapted, ids, mask), mask) <= 1e-5

    # Merged into the base weights: an ordinary model with the adapted model's logits, in JAX and in torch.
    lora.merge_into_base(model)
    assert not lora.has_adapters(model)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids), jnp.asarray(mask))), ours, atol=2e-5)
    models.save_pretrained(model, tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "merged", dtype=torch.float32, attn_implementation="eager"
    )
    assert tiny_hf.rel_l2(ours, tiny_hf.reference_logits(merged.eval(), ids, mask), mask) <= 1e-5


def test_adapters_shard_by_the_base_weights_rules():
    model = models.Decoder(
        models.ModelConfig.from_hf(tiny_hf.config("qwen2_untied").to_dict()), rngs=nnx.Rngs(0)
    )
    mesh = parallel.make_mesh(2, 2, 2, devices=jax.devices()[:8])
    lora.add_adapters(model, _lora_config(rank=4), seed=0, mesh=mesh)
    P = jax.sharding.PartitionSpec
    # The base q [L, D, N, H] is split (None, fsdp, tensor, None) by the default rules: A [L, D, r] splits
    # D the same way, B [L, r, N, H] splits N the same way; the rank axis is replicated.
    q_names = model.layers.q.get_metadata()["out_sharding"]
    assert logical_to_spec(q_names, mesh, None, model.layers.q.shape) == P(None, "fsdp", "tensor", None)
    assert model.lora.q_a.get_value().sharding.spec == P(None, "fsdp", None)
    assert model.lora.q_b.get_value().sharding.spec == P(None, None, "tensor", None)
    assert model.lora.down_a.get_value().sharding.spec == P(None, "tensor", None)
    assert model.lora.down_b.get_value().sharding.spec == P(None, None, "fsdp")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("rank", -1, "lora.rank"), ("alpha", 0.0, "lora.alpha"),
     ("targets", "q,qq", "lora.targets"), ("targets", "q,q", "lora.targets"), ("targets", "", "lora.targets")],
)  # fmt: skip
def test_bad_lora_config_names_the_field(field, value, match):
    c = ml_collections.ConfigDict(_lora_config().to_dict())
    c[field] = value
    with pytest.raises(ValueError, match=match):
        lora.validate(c)
