"""configs/tiny.py:lora end to end on a data × fsdp × tensor mesh: only the adapters train, a restart restores
the state, and both exports (merged HF folder, PEFT adapter) give the adapted model's logits in torch."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import tiny_hf
import torch
import transformers
from flax import nnx

from tsdkd_jax import checkpoint, train
from tsdkd_jax.train import state as state_lib

_OVERRIDES = {
    "checkpoint__every": 2, "mesh__data": 2, "mesh__fsdp": 2, "mesh__tensor": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tiny_config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lora_run")
    c = tiny_config("lora", total_steps=4, checkpoint__export=True, **_OVERRIDES)
    t = train.Trainer(c, str(workdir))
    before = jax.device_get(t.state["params"])
    t.run()
    return {"config": c, "workdir": workdir, "graphdef": t.graphdef, "before": before,
            "after": jax.device_get(t.state["params"]), "opt_state": jax.device_get(t.state["opt_state"])}  # fmt: skip


def _leaves(tree):
    return {
        jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_training_changes_only_the_adapters(lora_run):
    adapters, base = state_lib.split_trainable(lora_run["before"])
    adapters_after, base_after = state_lib.split_trainable(lora_run["after"])
    assert set(adapters) == {f"{t}_{m}" for t in ("q", "k", "v", "o", "gate", "up", "down") for m in "ab"}
    before, after = _leaves(base), _leaves(base_after)
    assert before.keys() == after.keys() and "['layers']['q']" in before
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name, value in _leaves(adapters).items():
        assert not np.array_equal(_leaves(adapters_after)[name], value), name
    # AdamW's two moments of each adapter (and scalar counts): no state for the frozen base.
    n_adapter = sum(x.size for x in _leaves(adapters).values())
    n_opt = sum(x.size for x in _leaves(lora_run["opt_state"]).values())
    assert 2 * n_adapter <= n_opt <= 2 * n_adapter + 8


def test_a_restart_restores_the_adapters_and_their_optimizer_state(lora_run):
    t = train.Trainer(lora_run["config"], str(lora_run["workdir"]))  # restores step 4; compiles nothing
    try:
        assert t.start_step == 4
        restored = jax.device_get({"params": t.state["params"], "opt_state": t.state["opt_state"]})
    finally:
        t.close()
    want = _leaves({"params": lora_run["after"], "opt_state": lora_run["opt_state"]})
    got = _leaves(restored)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _jax_logits(lora_run, ids, mask):
    model = nnx.merge(lora_run["graphdef"], lora_run["after"])
    return np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))


def _torch(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def test_merged_export_has_the_adapted_models_logits(lora_run):
    ids, mask = tiny_hf.left_padded_batch(384)
    ours = _jax_logits(lora_run, ids, mask)
    base = tiny_hf.reference_logits(_torch(lora_run["config"].student.path), ids, mask)
    assert tiny_hf.rel_l2(ours, base, mask) > 1e-3  # the trained adapters moved the model
    merged = tiny_hf.reference_logits(_torch(lora_run["workdir"] / "export"), ids, mask)
    assert tiny_hf.rel_l2(ours, merged, mask) <= 1e-5


def test_peft_loads_the_adapter_onto_the_original_student(lora_run):
    ids, mask = tiny_hf.left_padded_batch(384)
    student = _torch(lora_run["config"].student.path)
    adapted = peft.PeftModel.from_pretrained(student, lora_run["workdir"] / "export_adapter").eval()
    got = tiny_hf.reference_logits(adapted, ids, mask)
    assert tiny_hf.rel_l2(_jax_logits(lora_run, ids, mask), got, mask) <= 1e-5


def test_resume_identity_names_the_lora_section_only_when_lora_is_on(tiny_config):
    train_set = types.SimpleNamespace(prompts=[np.arange(3, dtype=np.int32)], responses=None)
    off = checkpoint.run_identity(tiny_config(), train_set)
    on = checkpoint.run_identity(tiny_config("lora"), train_set)
    assert set(on) - set(off) == {"lora.rank", "lora.alpha", "lora.targets"}  # a plain run's is unchanged
    assert on["lora.rank"] == "8" and on["lora.alpha"] == "16.0"
