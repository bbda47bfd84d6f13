"""Step-time split (profile mode), model FLOPs and the peak-FLOPs table."""

import dataclasses
import types

import jax
import numpy as np
from flax import nnx
from run_files import read_metrics

from tsdkd_jax import models, train
from tsdkd_jax.train import perf


def test_split_step_equals_the_fused_step(tiny_config, tmp_path):
    """The separately jitted pieces compute exactly what train_step computes (accumulation + pre-pass)."""
    t = train.Trainer(tiny_config("accum"), str(tmp_path))
    assert perf.has_prepass(t.spec)
    batch, _, _ = t.make_batch(1, next(t.iterator))
    split = perf.SplitStep(t.spec, graphdef=t.graphdef, teacher_graphdef=t.teacher_graphdef, tx=t.tx,
                           lr_fn=train.state.schedule(t.config))  # fmt: skip
    split_state, split_metrics, times = split(t.state, t.teacher_params, batch)
    assert set(times) == {"time/teacher", "time/student_loss", "time/update"} and min(times.values()) > 0
    state, metrics = t.step_fn(t.state, t.teacher_params, batch)
    for name, value in metrics.items():
        np.testing.assert_allclose(
            float(split_metrics[name]), float(value), rtol=1e-5, atol=1e-6, err_msg=name
        )
    for a, b in zip(jax.tree.leaves(split_state["params"]), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_profile_every_logs_the_split_and_flops(tiny_config, tmp_path):
    train.run(tiny_config(total_steps=2, profile_every=2, checkpoint__every=2), str(tmp_path))
    rows = read_metrics(tmp_path)
    assert "time/teacher" not in rows[0]
    assert {"time/teacher", "time/student_loss", "time/update", "time/sample", "flops"} <= set(rows[1])
    assert rows[1]["flops"] > 0 and "mfu" not in rows[1]  # CPU: no known peak


def test_matmul_params_match_the_model():
    """FLOPs count every weight matrix once: layer matmul weights + unembedding = the model's params less
    the embedding table (untied), biases and norms."""
    cfg = models.ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4,
                             num_kv_heads=2, head_dim=8, qkv_bias=True, model_type="qwen2")  # fmt: skip
    state = nnx.state(nnx.eval_shape(lambda: models.Decoder(cfg, rngs=nnx.Rngs(0))))
    matrices = sum(
        int(np.prod(x.shape)) for path, x in nnx.to_flat_state(state)
        if path[-1] == "lm_head" or (path[0] == "layers" and not path[-1].endswith(("_bias", "norm")))
    )  # fmt: skip
    assert perf.layer_matmul_params(cfg) + cfg.vocab_size * cfg.hidden_size == matrices
    # Forward FLOPs: 2 per weight per token, plus attention and unembedding as documented.
    one_token = perf.forward_flops(cfg, rows=1, seq_len=1, unembed_tokens=1)
    assert one_token == 2 * matrices + 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim
    fused = perf.step_flops(cfg, cfg, rows=2, seq_len=8, response_len=4, prepass=False)
    assert fused == 4 * perf.forward_flops(cfg, 2, 8, 4)
    assert perf.step_flops(cfg, None, rows=2, seq_len=8, response_len=4, prepass=True) == fused


def test_peak_flops_table():
    def dev(kind, platform="gpu"):
        return types.SimpleNamespace(device_kind=kind, platform=platform)

    assert perf.peak_flops(dev("cpu", "cpu")) is None
    assert perf.peak_flops(dev("NVIDIA H100 80GB HBM3")) == 989e12
    assert perf.peak_flops(dev("NVIDIA H100 PCIe")) == 756e12
    assert perf.peak_flops(dev("NVIDIA H200")) == 989e12
    assert perf.peak_flops(dev("TPU v5 lite", "tpu")) == 197e12
    assert perf.peak_flops(dev("TPU v5p", "tpu")) == 459e12
    assert perf.peak_flops(dev("TPU v5", "tpu")) == 459e12
    assert perf.peak_flops(dev("TPU v6 lite", "tpu")) == 918e12
    assert perf.peak_flops(dev("Some future chip", "gpu")) is None
    assert dataclasses.is_dataclass(train.StepSpec)
