"""MiniLLM end to end on configs/tiny.py:minillm: teacher-mixed rollouts, the step's loss = the full-logit
objective (losses.minillm, itself checked against the paper in tests/losses/test_ref_minillm.py), accumulation
= one big batch, and a whole run."""

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from run_files import read_metrics
from test_step import _step

from tsdkd_jax import train
from tsdkd_jax.losses import minillm
from tsdkd_jax.plan import estimate, presets
from tsdkd_jax.train import methods
from tsdkd_jax.train import step as step_lib


@pytest.fixture(scope="module")
def trainer(tiny_config, tmp_path_factory):
    c = tiny_config("minillm", mesh__devices=1, optim__warmup_frac=0.0, total_steps=3, checkpoint__every=3)
    t = train.Trainer(c, str(tmp_path_factory.mktemp("minillm")))
    batch, _, sampled = t.make_batch(1, next(t.iterator))
    assert sampled
    return t, batch


def test_step_is_the_full_logit_objective_and_accumulates_exactly(trainer):
    """k = 1: the step's loss and terms are losses.minillm's on full logits. k = 2: the same gradient (the
    returns need whole responses: micro-batches split rows, and the terms' counts are the step's)."""
    t, batch = trainer
    sgd = optax.sgd(1.0)  # new params = params − gradient: compares the accumulated gradients themselves
    one_state, one = _step(t, batch, sgd, grad_accum=1)
    spec = t.step_fn.__wrapped__.keywords["spec"]
    inputs = step_lib.score_inputs(batch, spec)
    n = inputs["labels"].shape[1]
    p = inputs["tokens"].shape[1] - n
    logits = lambda g, params: nnx.merge(g, params)(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    z, u = logits(t.graphdef, t.state["params"]), logits(t.teacher_graphdef, t.teacher_params)
    cfg = minillm.MiniLLMConfig(**t.config.loss.minillm.to_dict())
    assert (cfg.mix_alpha, cfg.clip_eps, cfg.length_norm) == (0.2, 0.2, True)  # the paper's defaults
    ref, aux = minillm.minillm_loss(z, u, inputs["labels"], inputs["loss_mask"], cfg)
    np.testing.assert_allclose(float(one["loss"]), float(ref), rtol=1e-5)
    for name in ("loss/single", "loss/long", "minillm/weight", "minillm/reward", "minillm/clip_frac"):
        np.testing.assert_allclose(float(one[name]), float(aux[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(one["minillm/weight"]) != 1.0  # the rollouts were mixed: weights differ from 1
    state, metrics = _step(t, batch, sgd, grad_accum=2)
    for name in ("loss", "loss/single", "loss/long", "grad_norm"):
        np.testing.assert_allclose(float(metrics[name]), float(one[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(one_state["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_a_run_trains_on_mixed_samples(trainer):
    t, _ = trainer
    last = t.run()
    rows = read_metrics(t.workdir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["on_policy"] == 1.0 for r in rows)
    assert np.isfinite(last["loss"]) and last["loss/single"] > 0
    assert all({"loss/single", "loss/long", "minillm/reverse_kl", "minillm/weight"} <= set(r) for r in rows)


@pytest.mark.parametrize(
    "overrides, field",
    [({"loss__lam": 0.5}, "loss.lam"), ({"loss__normalize": "micro_batch"}, "loss.normalize"),
     ({"loss__minillm__mix_alpha": 1.0}, "loss.minillm"), ({"loss__minillm__clip_eps": -1}, "loss.minillm"),
     ({"sampling__temperature": 0.7}, "sampling"), ({"sampling__top_p": 0.9}, "sampling")],
)  # fmt: skip
def test_settings_it_cannot_train_with_name_the_field(tiny_config, overrides, field):
    c = tiny_config("minillm", **overrides)
    with pytest.raises(ValueError, match=field):
        train.validate(c, device_count=8, check_paths=False)


def test_the_table_row_is_all_it_takes():
    row = methods.get("minillm")
    assert (row.responses, row.needs_teacher) == ("student", True)
    assert row.teacher_mix(train.default_config().loss) == 0.2
    assert functools.reduce(getattr, ("loss", "minillm", "length_norm"), train.default_config())


def test_the_memory_plan_holds_both_models_while_sampling(tiny_config):
    c = tiny_config("minillm")
    student, _ = presets.model_config(c.student.path)
    teacher, _ = presets.model_config(c.teacher.path)
    plan = lambda c: estimate.plan(c, student, teacher, mesh_sizes=(1, 1, 1), device="cpu", capacity=2**40)
    mixed = plan(c)
    phase = "sampling (student + teacher, mixed)"
    assert [line.name for line in mixed.lines if line.phase == phase].count("KV cache") == 2
    c.method = "gkd"  # the student samples alone
    assert mixed.total(phase) > plan(c).total("sampling (student, on-policy)")
