"""student.param_dtype: the released run trained pure-bf16 weights (no fp32 master copy). With a small lr, an
AdamW step (|Δ| ≈ lr on the first step) falls below most weights' bf16 spacing and is lost, where the
default fp32 master copy moves every weight; params, gradients and AdamW state all take that dtype, and it
survives a checkpoint restore."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsdkd_jax import train


def _leaves(tree):
    return [np.asarray(x.astype(jnp.float32)) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_one_small_step(tiny_config, tmp_path, param_dtype):
    c = tiny_config(total_steps=2, checkpoint__every=1, student__param_dtype=param_dtype)
    c.optim.lr, c.optim.warmup_frac, c.optim.weight_decay = 1e-6, 0.0, 0.0
    trainer = train.Trainer(c, str(tmp_path))
    before = _leaves(trainer.state["params"])
    dtypes = {x.dtype for x in jax.tree.leaves((trainer.state["params"], trainer.state["opt_state"]))}
    assert jnp.dtype(param_dtype) in dtypes and dtypes <= {jnp.dtype(param_dtype), jnp.dtype(jnp.int32)}
    last = trainer.run()
    assert np.isfinite(last["loss"])
    after = _leaves(trainer.state["params"])
    moved = sum(int(np.sum(a != b)) for a, b in zip(after, before, strict=True)) / sum(a.size for a in after)
    if param_dtype == "float32":
        assert moved > 0.8, moved  # every weight with a gradient moves by ~lr (unused token rows have none)
    else:
        assert moved < 0.2, moved  # bf16 spacing at |w| ≥ 2^-7 is ≥ 2^-15 ≈ 3e-5 ≫ lr: the update rounds away

    restored = train.Trainer(c, str(tmp_path))  # resumes from the step-2 checkpoint in the same dtype
    assert restored.start_step == 2
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(trainer.state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(b.astype(jnp.float32)))
