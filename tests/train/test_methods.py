"""The method table (tsdkd_jax/train/methods.py) is what validation, the step, the loop and the planner read."""

import pytest

from tsdkd_jax import losses, train
from tsdkd_jax.plan import estimate, presets
from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import methods
from tsdkd_jax.train import step as step_lib


def test_the_config_schema_lists_the_table():
    assert tuple(config_lib.METHODS) == tuple(methods.METHODS) == tuple(train.METHODS)
    assert all(m.responses in methods.RESPONSES for m in methods.METHODS.values())


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_validation_follows_each_row(tiny_config, name):
    row = methods.METHODS[name]
    c = tiny_config(method=name, loss__divergence="skl")
    c.teacher.path = ""
    if row.needs_teacher:
        with pytest.raises(ValueError, match="teacher.path: is empty"):
            train.validate(c, device_count=8, check_paths=False)
    else:
        train.validate(c, device_count=8, check_paths=False)
    c = tiny_config(method=name, loss__divergence="skl", loss__lam=1.0, data__response_field="")
    c.data.max_response_len = 0
    if row.responses == "dataset":
        with pytest.raises(ValueError, match="data.response_field"):
            train.validate(c, device_count=8, check_paths=False)
    else:
        train.validate(c, device_count=8, check_paths=False)


def test_a_new_row_is_all_a_method_needs(tiny_config, monkeypatch):
    """A method added to the table only (here: reverse-KL on the teacher's samples) is accepted by validation,
    trained with its loss by the step, sampled by the teacher in the loop and planned for by the planner."""
    row = methods.Method("teacher", True, lambda lc: losses.make_config(divergence="rkl", use_gate=False,
                                                                        use_indirect=False, use_em=False))  # fmt: skip
    monkeypatch.setitem(methods.METHODS, "rkl_on_teacher_samples", row)
    c = tiny_config(method="rkl_on_teacher_samples", loss__lam=0.0)
    train.validate(c, device_count=8, check_paths=False)
    spec = step_lib.make_spec(c, pad_id=0, mesh=None, batch_axes=("data", "fsdp"))
    assert (spec.loss_cfg.divergence, spec.loss_cfg.use_em, spec.mask_pad_id) == ("rkl", False, -1)
    assert methods.responder(c, on_policy_step=False) == "teacher"
    student, _ = presets.model_config(c.student.path)
    teacher, _ = presets.model_config(c.teacher.path)
    p = estimate.plan(c, student, teacher, mesh_sizes=(1, 1, 1), device="cpu", capacity=2**40)
    assert any(line.phase.startswith("sampling (teacher") for line in p.lines)
    assert not any(line.phase.startswith("sampling (student") for line in p.lines)  # λ = 0 here, no coin


def test_responders_follow_the_coin():
    def cfg(name, lam):
        c = train.default_config()
        c.method, c.loss.lam = name, lam
        return c

    assert methods.responder(cfg("tsdkd", 0.5), on_policy_step=True) == "student"
    assert methods.responder(cfg("tsdkd", 0.5), on_policy_step=False) is None
    assert methods.responder(cfg("supervised_kd", 1.0), on_policy_step=True) is None
    assert methods.responder(cfg("seqkd", 0.0), on_policy_step=False) == "teacher"


def test_the_official_row_masks_pad_in_the_step(tiny_config):
    for name, masked in (("tsdkd_official", True), ("tsdkd", False)):
        spec = step_lib.make_spec(tiny_config(method=name), pad_id=5, mesh=None, batch_axes=("data",))
        assert spec.mask_pad_id == (5 if masked else -1)
