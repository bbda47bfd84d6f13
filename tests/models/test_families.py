"""Each family: a tiny random transformers model saved to disk, loaded by us, same logits on left padding."""

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf

from tsdkd_jax import models


@pytest.mark.parametrize("family", sorted(tiny_hf.FAMILIES))
def test_logits_match_transformers(family, tmp_path):
    hf = tiny_hf.build(family)
    # gemma2 is saved as several shards to exercise the index path.
    hf.save_pretrained(tmp_path, max_shard_size="100KB" if family in ("gemma2", "qwen3") else "50MB")
    if family in ("gemma2", "qwen3"):
        assert (tmp_path / "model.safetensors.index.json").exists()
    model = models.from_pretrained(tmp_path)
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    ref = tiny_hf.reference_logits(hf, ids, mask)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert tiny_hf.rel_l2(ours, ref, mask) <= 1e-4


# the layer scan with gate and up as two matmuls; the unrolled loop (scan_layers=False) with one [D, 2F] matmul
@pytest.mark.parametrize("scan, one_gate_up_matmul", [(True, False), (False, True)])
@pytest.mark.parametrize("family", ["gemma3", "qwen2_untied"])  # sliding + full layers; plain full layers
def test_scanned_and_unrolled_layers_match_transformers(
    family, scan, one_gate_up_matmul, tmp_path, monkeypatch
):
    if not one_gate_up_matmul:
        monkeypatch.setattr(models.layers, "FUSED_GATE_UP_MAX", 0)
    hf = tiny_hf.build(family)
    hf.save_pretrained(tmp_path)
    model = models.from_pretrained(tmp_path)
    model.scan_layers = scan
    assert model._scans() == scan
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    assert tiny_hf.rel_l2(ours, tiny_hf.reference_logits(hf, ids, mask), mask) <= 1e-4


def test_config_switches():
    hf = tiny_hf.build("gemma3")
    cfg = models.ModelConfig.from_hf(hf.config.to_dict())
    assert cfg.layer_types == ("sliding", "full", "sliding")
    assert cfg.rope_local_theta == 1000.0 and cfg.rope_theta == 100000.0
    assert dict(cfg.rope_scaling)["rope_type"] == "linear"
    assert cfg.qk_norm and cfg.sandwich_norm and cfg.norm_plus_one and cfg.activation == "gelu_tanh"
    assert cfg.embed_scale == pytest.approx(8.0)
    g2 = models.ModelConfig.from_hf(tiny_hf.build("gemma2").config.to_dict())
    assert g2.layer_types == ("sliding", "full", "sliding") and g2.final_logit_softcap == 3.0
    q2 = models.ModelConfig.from_hf(tiny_hf.build("qwen2_untied").config.to_dict())
    assert q2.qkv_bias and not q2.tie_embeddings and q2.sliding_window is None
