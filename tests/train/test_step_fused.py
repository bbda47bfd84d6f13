"""loss.fused in the train step: the same metrics and the same update as the checkpointed loss head."""

import jax
import numpy as np
import optax
import pytest
from test_step import _step, _trainer_and_batch

from tsdkd_jax.losses import fused_rows


def _spy(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize(
    "arg, changes",
    [
        ("", {}),  # paper, one micro-batch: no entropy pre-pass (losses/fused_rows.py)
        ("", {"grad_accum": 2}),  # paper, global counts from the selection pre-pass
        ("official", {"logits_dtype": "bfloat16"}),  # per-micro-batch means, bf16-rounded logits
    ],
)
def test_fused_step_equals_checkpointed_step(tiny_config, tmp_path_factory, monkeypatch, arg, changes):
    t, batch = _trainer_and_batch(tiny_config, arg, str(tmp_path_factory.mktemp("fused")))
    sgd = optax.sgd(1.0)  # new params = params − gradient: compares the accumulated gradients themselves
    ref_state, ref = _step(t, batch, sgd, fused=False, **changes)
    traced = []  # which fused pass the step builds: the row-wise one exactly when no selection is fixed
    monkeypatch.setattr(fused_rows, "fused_kd_rows", _spy(fused_rows.fused_kd_rows, traced))
    state, metrics = _step(t, batch, sgd, fused=True, **changes)
    assert bool(traced) == (arg == "" and not changes)
    assert float(ref["grad_norm"]) > 0
    assert set(metrics) == set(ref)
    for name, value in ref.items():
        np.testing.assert_allclose(float(metrics[name]), float(value), rtol=1e-5, atol=1e-6, err_msg=name)
    p0 = jax.tree.leaves(t.state["params"])
    pairs = zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref_state["params"]), p0, strict=True)
    for a, b, p in pairs:  # the gradients themselves: params − new params, up to the params' float32 spacing
        g, g_ref = np.asarray(p) - np.asarray(a), np.asarray(p) - np.asarray(b)
        spacing = 4 * np.finfo(np.float32).eps * np.abs(np.asarray(p)).max()
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=max(spacing, 1e-5 * np.abs(g_ref).max()))
