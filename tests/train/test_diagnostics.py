"""Step diagnostics: per-term hidden-state gradient norms against an independent full-logit jax.grad, the
EM-alone switch against the float64 reference, clip_frac against the logged gradient norms, and the keys a
KD run writes to metrics.jsonl."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_np as ref
from flax import nnx
from run_files import read_metrics

from tsdkd_jax import losses, train
from tsdkd_jax.train import step as step_lib

TERMS = {"direct": "loss/direct", "em": "loss/em", "indirect": "loss/indirect"}


def _step_and_inputs(tiny_config, workdir, arg="", **overrides):
    t = train.Trainer(tiny_config(arg, mesh__devices=1, optim__warmup_frac=0.0, **overrides), workdir)
    batch, _, _ = t.make_batch(1, next(t.iterator))
    spec = t.step_fn.__wrapped__.keywords["spec"]
    params0 = jax.device_get(t.state["params"])
    fn = functools.partial(
        step_lib.train_step, graphdef=t.graphdef, teacher_graphdef=t.teacher_graphdef, tx=t.tx,
        lr_fn=train.state.schedule(t.config), spec=spec,
    )  # fmt: skip
    state = jax.tree.map(jnp.copy, t.state)
    _, metrics = jax.jit(fn)(state, t.teacher_params, batch)
    inputs = step_lib.score_inputs(batch, spec)
    n = inputs["labels"].shape[1]
    p = inputs["tokens"].shape[1] - n
    student = nnx.merge(t.graphdef, params0)
    teacher = nnx.merge(t.teacher_graphdef, t.teacher_params)
    hs = student.hidden_states(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    u = teacher(inputs["tokens"], inputs["attn"])[:, p - 1 : p - 1 + n]
    return t, jax.device_get(metrics), (student, hs, u, inputs["loss_mask"])


@pytest.mark.parametrize("arg", ["", "no_gate"])
def test_term_grad_norms_equal_full_logit_grads(tiny_config, tmp_path, arg):
    """grad_norm/<term> = ‖∂(w·term)/∂h‖ over the batch's response hidden states, the reference taken by
    jax.grad of losses.tsdkd_loss's term on full logits (no chunking, no trainer objective code)."""
    t, metrics, (student, hs, u, mask) = _step_and_inputs(tiny_config, str(tmp_path), arg)
    lc = t.config.loss
    kw = {"beta": lc.beta, "gate_tau": lc.gate_tau, "rank_k": lc.rank_k, "rank_weight": lc.rank_weight,
          "opener_frac": lc.opener_frac, "em_frac": lc.em_frac, "em_weight": lc.em_weight,
          "use_gate": lc.use_gate}  # fmt: skip
    weights = {"direct": 1.0, "em": lc.em_weight, "indirect": lc.rank_weight}
    for short, name in TERMS.items():

        def term(h, name=name):
            return losses.tsdkd_loss(student.unembed(h), u, mask, **kw)[1][name]

        want = weights[short] * float(jnp.linalg.norm(jax.grad(term)(hs)))
        assert want > 0
        np.testing.assert_allclose(metrics[f"grad_norm/{short}"], want, rtol=2e-4, err_msg=short)


def test_em_alone_step_equals_float64_reference(tiny_config, tmp_path):
    """loss.use_direct=False, use_indirect=False: the step's loss is the EM term alone (float64 reference
    on the same full logits); the direct divergence is still logged, but has no gradient norm."""
    _, metrics, (student, hs, u, mask) = _step_and_inputs(
        tiny_config, str(tmp_path), loss__use_direct=False, loss__use_indirect=False
    )
    z = np.asarray(student.unembed(hs))
    want, aux = ref.tsdkd_loss_paper(z, np.asarray(u), np.asarray(mask), use_direct=False, use_indirect=False)
    assert abs(want - aux["loss/em"]) < 1e-12 and aux["loss/direct"] > 0
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss/direct"], aux["loss/direct"], rtol=1e-5)
    assert {k for k in metrics if k.startswith("grad_norm/")} == {"grad_norm/em"}


def test_clip_frac_counts_steps_over_the_clip_across_a_resume(tiny_config, tmp_path):
    """clip_frac at step s = #{j ≤ s: logged grad_norm_j > optim.grad_clip} / s, also after a resume."""
    probe = tiny_config("smoke", mesh__devices=1, total_steps=6, optim__grad_clip=0.0)
    train.Trainer(probe, str(tmp_path / "probe")).run()
    clip = float(np.median([r["grad_norm"] for r in read_metrics(tmp_path / "probe")]))
    work = str(tmp_path / "run")
    cfg = functools.partial(tiny_config, "smoke", mesh__devices=1, optim__grad_clip=clip, checkpoint__every=3)
    train.Trainer(cfg(total_steps=3), work).run()
    train.Trainer(cfg(total_steps=6), work).run()  # resumes from step 3
    rows = read_metrics(work)
    assert [r["step"] for r in rows] == list(range(1, 7))
    over = np.cumsum([r["grad_norm"] > clip for r in rows])
    want = over / np.arange(1, 7)
    np.testing.assert_allclose([r["clip_frac"] for r in rows], want, rtol=1e-6)
    assert 0 < want[-1] < 1, "the clip threshold should split the run's steps"


@pytest.mark.parametrize("arg", ["", "gkd", "official", "supervised_kd", "distillm", "no_term_grad_norms"])
def test_kd_runs_log_the_diagnostics(tiny_config, tmp_path, arg):
    off = arg == "no_term_grad_norms"  # loss.term_grad_norms=False: the per-term norms are not computed
    c = tiny_config("" if off else arg, total_steps=1, loss__term_grad_norms=not off)
    train.Trainer(c, str(tmp_path)).run()
    (row,) = read_metrics(tmp_path)
    keys = {"grad_norm", "clip_frac", "entropy/student", "entropy/teacher", "agree/top1"}
    if not off:
        keys.add("grad_norm/direct")
    if arg in ("", "official"):
        keys |= {"grad_norm/em", "grad_norm/indirect"}
    assert keys <= set(row), sorted(keys - set(row))
    assert all(np.isfinite(row[k]) for k in keys)
    assert off == (not any(k.startswith("grad_norm/") for k in row))


def test_response_metrics_hook_sees_each_sampled_batch(tiny_config, tmp_path):
    """Trainer.response_metrics gets the decoded responses of on-policy steps only (λ = 0.5: some steps use
    the dataset's responses) and its values land in those steps' metrics rows."""
    seen = []

    def fn(texts):
        seen.append(texts)
        return {"resp/count": len(texts), "resp/chars": sum(map(len, texts))}

    t = train.Trainer(tiny_config("mixed", total_steps=6), str(tmp_path))
    t.response_metrics = fn
    t.run()
    rows = read_metrics(tmp_path)
    on = [r for r in rows if r["on_policy"] == 1.0]
    assert 0 < len(on) < len(rows) and len(seen) == len(on)
    assert all(r["resp/count"] == t.config.data.batch_size for r in on)
    assert [r["resp/chars"] for r in on] == [sum(map(len, texts)) for texts in seen]
    assert all("resp/count" not in r for r in rows if r["on_policy"] == 0.0)
    assert all(isinstance(x, str) for texts in seen for x in texts) and any(
        x for texts in seen for x in texts
    )
