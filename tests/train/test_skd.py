"""Speculative KD as a method (configs/tiny.py:skd): its samples come from the interleaved sampler with the
run's current models and keys (on the 8-device mesh: the sharded rule agrees with the plain sampler at K's
limits), it trains end to end and logs its kept fraction, its K is validated and the planner counts both
models' caches in one sampling phase."""

import jax
import numpy as np
import pytest
from run_files import read_metrics

from tsdkd_jax import sampling, train
from tsdkd_jax.plan import estimate, presets
from tsdkd_jax.train import methods


def test_skd_samples_then_trains_end_to_end(tiny_config, tmp_path):
    c = tiny_config("skd", total_steps=3, checkpoint__every=3)
    assert (c.method, c.loss.skd_top_k, methods.loss_config(c).divergence) == ("skd", 25, "fkl")
    t = train.Trainer(c, str(tmp_path))  # 8 fake devices: the batch is split over the mesh's data axis
    host_batch = next(t.iterator)
    key = sampling.sample_key(c.seed, 1, 0)
    prompts = [t.to_global(host_batch[k]) for k in ("prompt_ids", "prompt_mask")]
    # The limits of K pin the wiring: K = 0 → the teacher's samples, K ≥ V → the current student's, each
    # with the key the sampler derives for it (sampling/interleaved.py).
    for k, by, j in (
        (0, (t.teacher_graphdef, t.teacher_params), 1),
        (10**6, (t.graphdef, t.state["params"]), 0),
    ):
        t.config.loss.skd_top_k = k
        batch, _, sampled = t.make_batch(1, host_batch)
        tokens, mask = t.sample(*by, *prompts, jax.random.fold_in(key, j))
        assert sampled and t.sample_stats == {"skd/kept_frac": float(k > 0)}
        np.testing.assert_array_equal(np.asarray(batch["response_ids"]), np.asarray(tokens))
        np.testing.assert_array_equal(np.asarray(batch["response_mask"]), np.asarray(mask))
    t.config.loss.skd_top_k = 25
    last = t.run()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3] and np.isfinite(last["loss"]) and last["loss"] > 0
    assert all(0.0 <= r["skd/kept_frac"] <= 1.0 and r["on_policy"] == 1.0 for r in rows)


def test_bad_k_names_the_field(tiny_config):
    with pytest.raises(ValueError, match="loss.skd_top_k: must be a whole number >= 0, got -1"):
        train.validate(tiny_config("skd", loss__skd_top_k=-1), device_count=8, check_paths=False)
    with pytest.raises(TypeError, match="skd_top_k"):  # the config's field type already refuses fractions
        tiny_config("skd,loss.skd_top_k=2.5")


def test_planner_holds_both_caches_in_one_phase(tiny_config):
    c = tiny_config("skd")
    student, _ = presets.model_config(c.student.path)
    teacher, _ = presets.model_config(c.teacher.path)
    p = estimate.plan(c, student, teacher, mesh_sizes=(1, 1, 1), device="cpu", capacity=2**40)
    phase = "sampling (student + teacher, interleaved)"
    assert [line.name for line in p.lines if line.phase == phase].count("KV cache") == 2
    c.method = "gkd"
    alone = estimate.plan(c, student, teacher, mesh_sizes=(1, 1, 1), device="cpu", capacity=2**40)
    assert p.total(phase) > alone.total("sampling (student, on-policy)")
