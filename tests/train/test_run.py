"""Whole runs on configs/tiny.py: distillation works, the teacher is untouched, every method runs, meshes agree,
a non-finite loss stops the run."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import poison
import pytest
from run_files import read_metrics

from tsdkd_jax import train


def test_distillation_halves_heldout_kl_and_never_touches_the_teacher(tiny_config, tmp_path):
    c = tiny_config("gate_only", eval_at_ends=True)
    t = train.Trainer(c, str(tmp_path))
    teacher_before = jax.device_get(t.teacher_params)
    t.run()
    rows = read_metrics(tmp_path)
    kl = [r["eval/kl_teacher_student"] for r in rows if "eval/kl_teacher_student" in r]
    assert len(kl) == 2 and kl[1] <= 0.5 * kl[0], kl
    for a, b in zip(jax.tree.leaves(teacher_before), jax.tree.leaves(jax.device_get(t.teacher_params))):
        np.testing.assert_array_equal(a, b)
    # The optimizer state and the checkpoint hold the student's tree only.
    n_student = sum(x.size for x in jax.tree.leaves(t.state["params"]))
    n_opt = sum(x.size for x in jax.tree.leaves(t.state["opt_state"]))
    assert n_opt <= 2 * n_student + 8  # AdamW moments (+ scalar counts), nothing of the teacher's
    meta = ocp.StandardCheckpointer().metadata(
        os.path.join(tmp_path, "checkpoints", str(c.total_steps), "state")
    )
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
    assert set(tree) == {"params", "opt_state", "step", "rng"}
    n_saved = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree["params"]))
    assert n_saved == n_student
    assert os.path.isfile(os.path.join(tmp_path, "tensorboard", os.listdir(tmp_path / "tensorboard")[0]))


@pytest.mark.parametrize(
    "arg",
    ["", "gkd", "official", "supervised_kd", "seqkd", "distillm", "distillm_srkl", "sft", "no_gate",
     "no_indirect", "no_em", "offpolicy", "mixed", "accum", "micro_norm"],
)  # fmt: skip
def test_every_method_and_switch_runs(tiny_config, tmp_path, arg):
    c = tiny_config(arg, total_steps=3, checkpoint__every=3)
    last = train.run(c, str(tmp_path))
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert np.isfinite(last["loss"]) and last["loss"] > 0
    for r in rows:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "time/sample", "time/step"} <= set(r)
    if c.method in ("tsdkd", "tsdkd_official") and c.loss.use_em:
        assert {"loss/direct", "loss/em", "select/em_frac", "gate/mean", "select/opener_len"} <= set(rows[0])


def test_meshes_give_the_same_losses_as_one_device(tiny_config, tmp_path):
    def losses(name, **mesh):
        overrides = {f"mesh__{k}": v for k, v in mesh.items()}
        train.run(tiny_config(total_steps=2, **overrides), str(tmp_path / name))
        return [
            (r["loss"], r["loss/direct"], r["loss/em"], r["loss/indirect"])
            for r in read_metrics(tmp_path / name)
        ]

    ref = losses("one", devices=1, data=1, fsdp=1, tensor=1)
    for shape in ((8, 1, 1), (2, 2, 2), (1, 4, 2)):
        got = losses("x".join(map(str, shape)), data=shape[0], fsdp=shape[1], tensor=shape[2])
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=str(shape))


def test_nonfinite_loss_stops_naming_step_and_term_previous_checkpoint_intact(tiny_config, tmp_path):
    c = tiny_config(total_steps=6, checkpoint__every=2)
    t = train.Trainer(c, str(tmp_path))
    poison.nan_at_step(t, 3, "loss/em")
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss at step 3: loss/em = nan"):
        t.run()
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps == [2]
    # The saved step is intact: a restart resumes from it (and stops at the same poisoned step).
    t = train.Trainer(c, str(tmp_path))
    assert t.start_step == 2 and all(
        np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(t.state["params"])
    )
    t.ckpt.close()
