"""Layer-dropped students (models.layerdrop) against transformers' own model with the same blocks removed."""

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_hf
import torch
import transformers

from tsdkd_jax import models
from tsdkd_jax.models import layerdrop


def _pruned(ref, keep):
    """transformers' model with only the blocks in `keep` (each keeps its attention kind)."""
    out = copy.deepcopy(ref)
    out.model.layers = torch.nn.ModuleList([out.model.layers[i] for i in keep])
    for new, layer in enumerate(out.model.layers):
        layer.self_attn.layer_idx = new  # its slot in the KV cache transformers builds
    out.config.num_hidden_layers = len(keep)
    if getattr(out.config, "layer_types", None):
        out.config.layer_types = [ref.config.layer_types[i] for i in keep]
    return out.eval()


# gemma3's tiny config alternates sliding/full blocks: keeping (1, 2) puts a full block first
@pytest.mark.parametrize(
    ("family", "keep"), [("gemma3", (1, 2)), ("gemma3", (0, 2)), ("qwen2_untied", (0, 2))]
)
def test_keep_layers_matches_pruned_transformers_and_exports(family, keep, tmp_path):
    ref = tiny_hf.build(family, num_hidden_layers=3)
    ref.save_pretrained(tmp_path / "teacher")
    student = layerdrop.keep_layers(models.from_pretrained(tmp_path / "teacher"), keep)
    assert student.config.num_layers == len(keep)
    ids, mask = tiny_hf.left_padded_batch(ref.config.vocab_size, lengths=(12, 7))
    want = tiny_hf.reference_logits(_pruned(ref, keep), ids, mask)
    got = np.asarray(student(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    assert tiny_hf.rel_l2(got, want, mask) < 1e-5
    models.save_pretrained(student, tmp_path / "student")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "student", dtype=torch.float32)
    assert reloaded.config.num_hidden_layers == len(keep)
    assert tiny_hf.rel_l2(tiny_hf.reference_logits(reloaded.eval(), ids, mask), want, mask) < 1e-5


def test_every_other():
    assert layerdrop.every_other(18) == (0, 2, 4, 6, 8, 10, 12, 14, 16)
    assert layerdrop.every_other(5, offset=1) == (1, 3)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ((), "at least one"),
        ((0, 3), r"out of range for a 3-layer"),
        ((2, 0), "increasing"),
        ((1, 1), "distinct"),
    ],
)
def test_bad_keep_is_named(keep, message, tmp_path):
    tiny_hf.build("qwen2_untied", num_hidden_layers=3).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        layerdrop.keep_layers(models.from_pretrained(tmp_path), keep)
