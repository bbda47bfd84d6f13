"""Export: our save_pretrained loads in transformers with the same logits and reloads bit-exactly."""

import json
import os

import jax.numpy as jnp
import numpy as np
import tiny_hf
import torch
import transformers
from flax import nnx

from tsdkd_jax import models


def _params(model):
    return {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_export_loads_in_transformers_and_round_trips(tmp_path):
    hf = tiny_hf.build("qwen2_untied")
    hf.save_pretrained(tmp_path / "src")
    ours = models.from_pretrained(tmp_path / "src")
    # Perturb a weight so the export must carry our values, not the source file's.
    ours.layers.q.set_value(ours.layers.q.get_value() * 1.5)
    models.save_pretrained(ours, tmp_path / "out", max_shard_size=60_000)
    files = os.listdir(tmp_path / "out")
    assert "model.safetensors.index.json" in files and "config.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 1

    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    reloaded_hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32, attn_implementation="eager"
    )
    ref = tiny_hf.reference_logits(reloaded_hf.eval(), ids, mask)
    got = np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask)))
    assert tiny_hf.rel_l2(got, ref, mask) <= 1e-4

    again = models.from_pretrained(tmp_path / "out")
    a, b = _params(ours), _params(again)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def test_tied_gemma_export_and_generation_config(tmp_path):
    hf = tiny_hf.build("gemma2")
    hf.save_pretrained(tmp_path / "src")
    with open(tmp_path / "src" / "generation_config.json", "w") as f:
        json.dump({"eos_token_id": [1, 107], "bos_token_id": 2}, f)
    ours = models.from_pretrained(tmp_path / "src")
    models.save_pretrained(ours, tmp_path / "out")
    assert os.path.exists(tmp_path / "out" / "model.safetensors")
    with open(tmp_path / "out" / "generation_config.json") as f:
        assert json.load(f)["eos_token_id"] == [1, 107]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", attn_implementation="eager"
    )
    ids, mask = tiny_hf.left_padded_batch(hf.config.vocab_size)
    ref = tiny_hf.reference_logits(reloaded.eval(), ids, mask)
    assert tiny_hf.rel_l2(np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask))), ref, mask) <= 1e-4


def test_bfloat16_load_and_vocab_padding(tmp_path):
    hf = tiny_hf.build("qwen2_tied")
    hf.to(torch.bfloat16).save_pretrained(tmp_path)
    model = models.from_pretrained(tmp_path, dtype="bfloat16", vocab_size=320)
    assert model.embed.get_value().dtype == jnp.bfloat16 and model.embed.shape == (320, 64)
    src = hf.model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(np.asarray(model.embed.get_value()[:256], np.float32), src)
    assert not np.asarray(model.embed.get_value()[256:], np.float32).any()
    ids, mask = tiny_hf.left_padded_batch(256)
    logits = model(jnp.asarray(ids), jnp.asarray(mask))
    assert logits.dtype == jnp.float32 and logits.shape[-1] == 320 and bool(jnp.isfinite(logits).all())
