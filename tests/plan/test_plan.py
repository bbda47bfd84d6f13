"""Memory planner: preset shapes vs published parameter counts, shard sizes vs the trainer's real shards, the
tiny config's estimate vs XLA's compiled memory analysis, the offline paper plan, the CLI and the warning.

What is compared with XLA (per device: the CPU step is SPMD-partitioned, so its memory analysis is one
device's program):
  resident = arguments            student params + AdamW moments (donated) + teacher params, vs the plan's
                                  resident lines (the batch and RNG, a few KiB, are in the arguments only);
  train    = temp                 everything the step allocates beyond its arguments (gradients, saved
                                  activations, one block's working set, the loss chunk or the unchunked
                                  loss's residuals) vs the plan's train phase;
  total    = arguments + outputs − aliased + temp, vs resident + train: what the step needs on a device.
The new state is written into the donated one (aliased), so outputs add only the metrics.
"""

import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tsdkd_jax import models, parallel, plan, train
from tsdkd_jax.plan import estimate, presets
from tsdkd_jax.train import assets
from tsdkd_jax.train import step as step_lib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(REPO, "configs", "tiny.py")

# Parameter counts from the models' safetensors metadata (tied embeddings stored once).
PUBLISHED = {
    "Qwen2.5-14B-Instruct": 14_770_033_664,
    "Qwen2.5-7B-Instruct": 7_615_616_512,
    "Qwen2.5-1.5B-Instruct": 1_543_714_304,
    "Qwen2.5-0.5B-Instruct": 494_032_768,
    "gemma-2-9b-it": 9_241_705_984,
    "gemma-2-2b-it": 2_614_341_888,
    "Qwen3-8B": 8_190_735_360,
}


def _count(cfg):
    return sum(math.prod(shape) for shape, _ in estimate.param_tensors(cfg))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_have_the_published_parameter_counts(name):
    cfg, source = presets.model_config(f"~/no/such/dir/{name}")
    assert source == f"preset {name}"
    assert _count(cfg) == PUBLISHED[name]


def test_qwen3_1_7b_preset_matches_its_model_card():
    cfg, _ = presets.model_config("Qwen/Qwen3-1.7B")
    total, embed = _count(cfg), cfg.vocab_size * cfg.hidden_size
    assert cfg.tie_embeddings and abs(total / 1.7e9 - 1) < 0.02 and abs((total - embed) / 1.4e9 - 1) < 0.02


def test_unknown_model_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither a folder with config.json nor a known preset"):
        presets.model_config("/nowhere/Llama-9000")


def _tiny(arg=None, **overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_config_for_plan", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(arg)
    assets.ensure(c)  # building the tiny models and data is an explicit step
    c.eval_at_ends, c.checkpoint.export, c.checkpoint.async_save = False, False, False
    for key, value in overrides.items():
        section, _, field = key.replace("__", ".").rpartition(".")
        (c[section] if section else c)[field] = value
    return c


@pytest.fixture(scope="module", autouse=True)
def _tiny_assets():
    os.environ.setdefault("TSDKD_TINY_DIR", os.path.join("/tmp", "tsdkd_tiny_assets"))


@pytest.mark.parametrize("shape", [(1, 4, 2), (2, 2, 2), (8, 1, 1)])
def test_param_bytes_equal_the_loaded_models_shards(shape):
    c = _tiny()
    mesh = parallel.make_mesh(*shape)
    rules = dict(parallel.DEFAULT_RULES)
    for path, dtype in ((c.student.path, "float32"), (c.teacher.path, "bfloat16")):
        model = models.from_pretrained(path, dtype, mesh, rules)
        real = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(nnx_state(model)))
        cfg, _ = presets.model_config(path)
        assert estimate.param_bytes(cfg, plan.abstract_mesh(shape), rules, np.dtype(dtype).itemsize) == real


def nnx_state(model):
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _compiled(trainer, c):
    b, p, n = c.data.batch_size, c.data.max_prompt_len, c.sampling.max_new_tokens
    rows = NamedSharding(trainer.mesh, P(trainer.batch_axes, None))
    batch = {name: jax.ShapeDtypeStruct((b, length), np.int32, sharding=rows) for name, length in
             (("prompt_ids", p), ("prompt_mask", p), ("response_ids", n), ("response_mask", n))}  # fmt: skip
    step = trainer.step_fn.lower(trainer.state, trainer.teacher_params, batch).compile()
    return step.memory_analysis()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"student__remat": True}, {"data__batch_size": 64, "sampling__max_new_tokens": 64},
     {"optim__grad_accum": 2, "data__batch_size": 16, "mesh__fsdp": 2, "mesh__tensor": 2},
     {"lora__rank": 8, "mesh__fsdp": 2, "mesh__tensor": 2},
     {"student__remat": True, "FULL_LOGITS_MAX": 0}],
    ids=["tiny", "remat", "activation_heavy", "accum_fsdp_tensor", "lora_fsdp_tensor", "remat_chunked_loss"],
)  # fmt: skip
def test_tiny_estimate_within_25_percent_of_compiled_memory(overrides, tmp_path, monkeypatch):
    """The tiny models (2 layers) run unrolled and their loss unchunked; with remat the layers scan, and with
    step.FULL_LOGITS_MAX = 0 (read by the step and the planner alike) the loss is chunked."""
    overrides = dict(overrides)
    if "FULL_LOGITS_MAX" in overrides:
        monkeypatch.setattr(step_lib, "FULL_LOGITS_MAX", overrides.pop("FULL_LOGITS_MAX"))
    c = _tiny(**overrides)
    t = train.Trainer(c, str(tmp_path))
    try:
        ma = _compiled(t, c)
    finally:
        t.ckpt.close()
    p = plan.plan_config(c, mesh=tuple(t.mesh.shape.values()), num_devices=jax.device_count())
    resident, step = p.total("resident"), p.total("train")
    compiled_total = (
        ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    )
    print(f"\n{overrides}: arguments {ma.argument_size_in_bytes} vs resident {resident}; temp "
          f"{ma.temp_size_in_bytes} vs train {step}; total {compiled_total} vs {resident + step}")  # fmt: skip
    assert abs(resident / ma.argument_size_in_bytes - 1) < 0.02
    assert abs(step / ma.temp_size_in_bytes - 1) < 0.25
    assert abs((resident + step) / compiled_total - 1) < 0.25


def test_paper_pair_plans_offline_and_says_where_it_fits():
    c = _tiny()
    c.student.path, c.teacher.path = "~/models/Qwen2.5-1.5B-Instruct", "~/models/Qwen2.5-14B-Instruct"
    c.student.compute_dtype, c.teacher.dtype, c.student.remat = "bfloat16", "bfloat16", True
    c.data.batch_size, c.data.max_prompt_len, c.sampling.max_new_tokens = 128, 512, 512
    c.loss.chunk_size = 1024
    v5p = plan.plan_config(c, mesh=(1, 4, 1), device="v5p")
    lines = {line.name: line.bytes for line in v5p.lines}
    assert lines["student params"] == pytest.approx(4 * 1_543_714_304 / 4, rel=0.01)
    assert lines["teacher params"] == pytest.approx(2 * 14_770_033_664 / 4, rel=0.01)
    assert v5p.fits and "fits in 95.00 GiB" in plan.table(v5p)
    one_v5e = plan.plan_config(c, mesh=(1, 1, 1), device="v5e")
    assert not one_v5e.fits and "does NOT fit" in plan.table(one_v5e)


def test_cli_prints_the_table(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tsdkd_jax.plan", f"--config={TINY}", "--mesh=1,4,2", "--device=h100"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for what in ("student params", "optimizer state", "teacher params", "gradients", "KV cache",
                 "activations (saved)", "loss", "fits in 80.00 GiB", "data=1 × fsdp=4 × tensor=2"):  # fmt: skip
        assert what in out.stdout, out.stdout


def test_warns_before_loading_when_it_will_not_fit(monkeypatch, caplog):
    monkeypatch.setattr(presets, "device_memory", lambda device, local=1: 1 << 20)
    monkeypatch.setattr(plan, "device_memory", lambda device, local=1: 1 << 20)
    with caplog.at_level("INFO", logger="tsdkd_jax.plan"):
        p = plan.warn_if_too_big(_tiny(), jax.devices())
    assert p is not None and not p.fits
    assert "expect an out-of-memory error" in caplog.text and "memory plan:" in caplog.text


def test_sampling_weight_lines_follow_gather_weights():
    c = _tiny()
    c.student.path, c.teacher.path = "~/models/Qwen2.5-1.5B-Instruct", "~/models/Qwen2.5-14B-Instruct"
    c.student.compute_dtype, c.teacher.dtype, c.eval_at_ends = "bfloat16", "bfloat16", True
    teacher, _ = presets.model_config(c.teacher.path)
    v, d, n_t, n_s = teacher.vocab_size, teacher.hidden_size, PUBLISHED["Qwen2.5-14B-Instruct"], 1_543_714_304

    def lines(gather):
        c.sampling.gather_weights = gather
        p = plan.plan_config(c, mesh=(1, 8, 1), device="h100")
        return {(line.phase, line.name): line.bytes for line in p.lines}, p

    on, p_on = lines(True)
    # The teacher whole in bf16 on every device; the student's fp32 shards cast to bf16, then gathered whole.
    assert on[("sampling (teacher, held-out eval)", "weight all-gather")] == pytest.approx(2 * n_t, rel=1e-6)
    assert on[("sampling (student, on-policy)", "weight all-gather")] == pytest.approx(
        2 * n_s * (1 + 1 / 8), rel=1e-3
    )
    off, p_off = lines(False)
    assert not any(name == "weight all-gather" for _, name in off)
    # One block or the vocab table (untied 14B: the larger), whichever is larger, in bf16.
    block = (n_t - 2 * v * d - d) / teacher.num_layers
    assert off[("sampling (teacher, held-out eval)", "weights gathered per block")] == pytest.approx(
        2 * max(block, v * d), rel=1e-6
    )
    assert p_off.total("sampling (teacher, held-out eval)") < p_on.total("sampling (teacher, held-out eval)")
