"""The pure train step: accumulation = one big batch; k = 1 losses = losses.tsdkd_loss on full logits."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tsdkd_jax import losses, train
from tsdkd_jax.train import objectives
from tsdkd_jax.train import step as step_lib


@functools.cache
def _trainer_and_batch(tiny_config, arg, workdir):
    t = train.Trainer(tiny_config(arg, mesh__devices=1, optim__warmup_frac=0.0), workdir)
    batch, _, _ = t.make_batch(1, next(t.iterator))
    return t, batch


def _step(t, batch, tx=None, **spec_changes):
    spec = dataclasses.replace(t.step_fn.__wrapped__.keywords["spec"], **spec_changes)
    tx = tx or t.tx
    state = jax.tree.map(jnp.copy, t.state)
    state["opt_state"] = tx.init(state["params"])
    fn = functools.partial(
        step_lib.train_step,
        graphdef=t.graphdef,
        teacher_graphdef=t.teacher_graphdef,
        tx=tx,
        lr_fn=train.state.schedule(t.config),
        spec=spec,
    )
    return jax.jit(fn)(state, t.teacher_params, batch)


@pytest.mark.parametrize("arg", ["", "sft"])
def test_accumulation_equals_one_big_batch(tiny_config, tmp_path_factory, arg):
    t, batch = _trainer_and_batch(tiny_config, arg, str(tmp_path_factory.mktemp("accum")))
    sgd = optax.sgd(1.0)  # new params = params − gradient: compares the accumulated gradients themselves
    one_state, one = _step(t, batch, sgd, grad_accum=1)  # unchunked loss (small vocabulary), no scan
    assert float(one["grad_norm"]) > 0
    for k in (2, 4):  # micro-batch scan; the loss in chunked scans
        state, metrics = _step(t, batch, sgd, grad_accum=k, full_logits_max=0)
        for name, value in one.items():
            np.testing.assert_allclose(float(metrics[name]), float(value), rtol=1e-5, atol=1e-6, err_msg=name)
        for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(one_state["params"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("full_logits_max", [0, 2**22])  # chunked scan / all tokens at once
@pytest.mark.parametrize("arg, variant", [("official", "official"), ("", "paper")])
def test_step_loss_equals_tsdkd_loss_on_full_logits(
    tiny_config, tmp_path_factory, arg, variant, full_logits_max
):
    t, batch = _trainer_and_batch(tiny_config, arg, str(tmp_path_factory.mktemp(variant)))
    params0 = jax.device_get(t.state["params"])
    _, metrics = _step(t, batch, full_logits_max=full_logits_max)
    spec = t.step_fn.__wrapped__.keywords["spec"]
    inputs = step_lib.score_inputs(batch, spec)
    n = inputs["labels"].shape[1]
    p = inputs["tokens"].shape[1] - n
    student = nnx.merge(t.graphdef, params0)
    teacher = nnx.merge(t.teacher_graphdef, t.teacher_params)
    z = student(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    u = teacher(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    lc = t.config.loss
    ref, aux = losses.tsdkd_loss(
        z, u, inputs["loss_mask"], variant=variant, beta=lc.beta, gate_tau=lc.gate_tau, rank_k=lc.rank_k,
        rank_weight=lc.rank_weight, opener_frac=lc.opener_frac, em_frac=lc.em_frac, em_weight=lc.em_weight,
    )  # fmt: skip
    np.testing.assert_allclose(float(metrics["loss"]), float(ref), rtol=1e-5)
    for name in ("loss/direct", "loss/em", "loss/indirect", "gate/mean", "select/opener_len", "agree/top1"):
        np.testing.assert_allclose(float(metrics[name]), float(aux[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    if variant == "official":  # pad = EOS: every EOS is unsupervised
        eos = t.eos_ids[0]
        assert float(jnp.sum(inputs["loss_mask"] * (inputs["labels"] == eos))) == 0.0


def test_methods_map_to_loss_configs(tiny_config):
    assert objectives.loss_config(tiny_config("sft")) is None
    gkd = objectives.loss_config(tiny_config("gkd"))
    assert (gkd.divergence, gkd.use_gate, gkd.use_em, gkd.use_indirect) == ("gjsd", False, False, False)
    assert objectives.loss_config(tiny_config("supervised_kd")).divergence == "fkl"
    assert objectives.loss_config(tiny_config("distillm_srkl")).divergence == "srkl"
    assert objectives.loss_config(tiny_config("official")).variant == "official"


def test_official_bf16_logits_equal_tsdkd_loss_on_rounded_logits(tiny_config, tmp_path_factory):
    """loss.logits_dtype="bfloat16" (the released run's bf16 loss math) = the kernel on bf16-rounded logits."""
    t, batch = _trainer_and_batch(tiny_config, "official", str(tmp_path_factory.mktemp("official")))
    params0 = jax.device_get(t.state["params"])
    _, f32 = _step(t, batch)
    _, bf16 = _step(t, batch, logits_dtype="bfloat16")
    spec = t.step_fn.__wrapped__.keywords["spec"]
    inputs = step_lib.score_inputs(batch, spec)
    n = inputs["labels"].shape[1]
    p = inputs["tokens"].shape[1] - n
    z = nnx.merge(t.graphdef, params0)(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    u = nnx.merge(t.teacher_graphdef, t.teacher_params)(inputs["tokens"], inputs["attn"])[
        :, p - 1 : p - 1 + n
    ]
    ref, _ = losses.tsdkd_loss(
        z.astype(jnp.bfloat16), u.astype(jnp.bfloat16), inputs["loss_mask"], variant="official"
    )
    np.testing.assert_allclose(float(bf16["loss"]), float(ref), rtol=1e-4)
    assert float(bf16["loss"]) != float(f32["loss"])  # the rounding is applied
