"""The per-token view: its selections are the loss's own (selection.py on the same logits), its other numbers
match NumPy float64 definitions, and a finished run's workdir gets selections.html and selections.png."""

import json
import os
import re

import numpy as np
import pytest
import reference_np as ref

from tsdkd_jax import inspect, losses, train
from tsdkd_jax.inspect import render
from tsdkd_jax.train import config as config_lib

B, N, V = 3, 10, 24
LENGTHS = [10, 6, 3]


def _case(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(B, N, V)).astype(np.float32) * 2
    u = rng.normal(size=(B, N, V)).astype(np.float32) * 3
    ids = rng.integers(0, V, size=(B, N))
    mask = (np.arange(N)[None] < np.asarray(LENGTHS)[:, None]).astype(np.float32)
    return z, u, ids, mask


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_token_table_selections_are_the_losses(variant):
    z, u, ids, mask = _case()
    cfg = losses.make_config(variant=variant, rank_k=5, em_frac=0.3, opener_frac=0.3)
    table = inspect.token_table(z, u, ids, mask, cfg)
    h_s, h_t = losses.entropy(z), losses.entropy(u)
    if variant == "paper":
        opener = losses.opener_mask(h_s, mask, 0.3)
        em = losses.em_mask(h_s, mask, 0.3)
    else:
        opener = losses.official_opener_mask(h_s, mask, 0.3)
        em = losses.official_em_mask(h_s, mask, 0.3) * mask
    np.testing.assert_array_equal(table["opener"], np.asarray(opener))
    np.testing.assert_array_equal(table["em_set"], np.asarray(em))
    np.testing.assert_allclose(table["gate"], np.asarray(losses.entropy_gate(h_s, h_t, 1.0)), rtol=1e-6)
    assert table["opener"].sum() > 0 and table["em_set"].sum() > 0
    # the same selections as the loss itself reports
    _, aux = losses.tsdkd_loss(z, u, mask, variant=variant, rank_k=5, em_frac=0.3, opener_frac=0.3)
    np.testing.assert_allclose(table["opener"].sum() / B, float(aux["select/opener_len"]), rtol=1e-6)
    if variant == "paper":
        np.testing.assert_allclose(
            table["em_set"].sum() / mask.sum(), float(aux["select/em_frac"]), rtol=1e-6
        )
    # entropies, teacher rank and mass from their definitions in float64
    np.testing.assert_allclose(table["h_s"], ref.entropy(z), rtol=1e-5)
    np.testing.assert_allclose(table["h_t"], ref.entropy(u), rtol=1e-5)
    u64 = u.astype(np.float64)
    rank = 1 + (u64 > np.take_along_axis(u64, ids[..., None], -1)).sum(-1)
    np.testing.assert_array_equal(table["teacher_rank"], rank)
    top = np.argsort(-z, axis=-1)[..., :5]
    mass = np.take_along_axis(ref.softmax(u64), top, -1).sum(-1)
    np.testing.assert_allclose(table["teacher_topk_mass"], mass, rtol=1e-5)


def test_html_marks_every_token_as_the_table_says(tmp_path):
    z, u, ids, mask = _case(1)
    table = inspect.token_table(z, u, ids, mask, losses.make_config(em_frac=0.3))
    rows = []
    for i in range(B):
        keep = mask[i] > 0
        rows.append({"prompt": f"p{i}", "tokens": [f"t{j}" for j in ids[i][keep]],
                     **{k: table[k][i][keep].tolist() for k in inspect.STATS}})  # fmt: skip
    view = {"rows": rows, "step": 0, "method": "tsdkd", "variant": "paper"}
    page = render.to_html(view, "case")
    opener = [int(x) for x in re.findall(r'data-opener="(\d)"', page)]
    em = [int(x) for x in re.findall(r'data-em="(\d)"', page)]
    assert opener == [int(x) for i in range(B) for x in table["opener"][i][mask[i] > 0]]
    assert em == [int(x) for i in range(B) for x in table["em_set"][i][mask[i] > 0]]
    render.to_png(view, str(tmp_path / "s.png"), "case")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_a_finished_run(tiny_config, tmp_path):
    c = tiny_config("smoke", total_steps=2)
    train.Trainer(c, str(tmp_path)).run()
    assert config_lib.recorded(str(tmp_path)).to_dict() == json.loads(c.to_json_best_effort())
    paths = inspect.write(str(tmp_path), n_prompts=3)
    with open(paths["html"]) as f:
        page = f.read()
    assert page.count("<div class='resp'>") == 3 and "at step 2" in page
    assert os.path.getsize(paths["png"]) > 0
