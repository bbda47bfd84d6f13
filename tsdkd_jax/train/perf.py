"""Step-time split, model FLOPs and MFU.

The fused train step is one XLA program, so the host cannot time its parts. `SplitStep` runs the same
computation (step.teacher_hidden → step.student_grads → step.apply_update, the functions train_step is made
of) as three separately jitted programs and times each with block_until_ready. Splitting costs speed: the
teacher's hidden states of the whole accumulation window are materialised ([k, B/k, N, D]) instead of one
micro-batch at a time, the gradients leave the program between the student and update parts, and nothing
overlaps. So the split runs only on profile steps (`config.profile_every`, an extra step's worth of compute
whose update is discarded) and in benchmarks/train_bench.py, never in place of the fused step.

MFU = model FLOPs of the scoring step (teacher forward, student forward + backward, the selection pre-pass
when it runs; recomputation under remat not counted; sampling excluded) / step time / (peak × devices).
The loop's time/step runs from a step's dispatch to the pull of its metrics, which happens after the next
step's rollout (the host never stalls the device), so its `mfu` is a lower bound when sampling on-policy;
benchmarks/train_bench.py times the fused step alone.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from tsdkd_jax.train import step as step_lib

# Dense bf16 peak FLOP/s per chip (vendor spec sheets), matched against device_kind in this order.
PEAK_BF16_FLOPS = (
    ("v5 lite", 197e12),  # TPU v5e reports "TPU v5 lite"
    ("v5e", 197e12),
    ("v6 lite", 918e12),  # TPU v6e (Trillium)
    ("v6e", 918e12),
    ("v5p", 459e12),
    ("TPU v5", 459e12),  # TPU v5p reports "TPU v5"
    ("TPU v4", 275e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200 NVL", 836e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_flops(device=None) -> float | None:
    """Peak dense bf16 FLOP/s of one device; None where unknown (CPU)."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return None
    kind = str(device.device_kind)
    return next((flops for name, flops in PEAK_BF16_FLOPS if name in kind), None)


def layer_matmul_params(cfg) -> int:
    """Weights one token meets in the decoder blocks (attention projections and MLP), all layers."""
    d, h = cfg.hidden_size, cfg.head_dim
    attn = d * cfg.num_heads * h * 2 + d * cfg.num_kv_heads * h * 2
    return cfg.num_layers * (attn + 3 * d * cfg.intermediate_size)


def forward_flops(cfg, rows: int, seq_len: int, unembed_tokens: int) -> float:
    """Forward FLOPs of `rows` sequences of `seq_len` tokens, unembedding `unembed_tokens` positions per row
    (attention over the full length, as computed; PaLM's convention)."""
    tokens = rows * seq_len
    blocks = 2 * layer_matmul_params(cfg) * tokens
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len * tokens
    unembed = 2 * cfg.vocab_size * cfg.hidden_size * rows * unembed_tokens
    return float(blocks + attention + unembed)


def step_flops(
    student_cfg, teacher_cfg, *, rows: int, seq_len: int, response_len: int, prepass: bool
) -> float:
    """Model FLOPs of one train step over the global batch (teacher_cfg None: no teacher)."""
    student = forward_flops(student_cfg, rows, seq_len, response_len)
    total = (4.0 if prepass else 3.0) * student
    if teacher_cfg is not None:
        total += forward_flops(teacher_cfg, rows, seq_len, response_len)
    return total


def has_prepass(spec: step_lib.StepSpec) -> bool:
    cfg = spec.loss_cfg
    return (
        spec.normalize == "global"
        and spec.grad_accum > 1
        and cfg is not None
        and (cfg.use_em or cfg.use_indirect)
    )


class SplitStep:
    """The train step as three separately jitted, separately timed programs (see the module docstring)."""

    def __init__(self, spec, *, graphdef, teacher_graphdef, tx, lr_fn):
        self.teacher = None
        if teacher_graphdef is not None:
            self.teacher = jax.jit(
                functools.partial(step_lib.teacher_hidden, teacher_graphdef=teacher_graphdef, spec=spec)
            )
        self.student = jax.jit(
            functools.partial(
                step_lib.student_grads, graphdef=graphdef, teacher_graphdef=teacher_graphdef, spec=spec
            )
        )
        self.update = jax.jit(functools.partial(step_lib.apply_update, tx=tx, lr_fn=lr_fn, spec=spec))

    def __call__(self, state, teacher_params, batch) -> tuple[dict, dict, dict[str, float]]:
        """(new state, metrics, {"time/teacher", "time/student_loss", "time/update"}); the state is kept."""
        jax.block_until_ready((state, batch))
        t0 = time.perf_counter()
        hiddens = None
        if self.teacher is not None:
            hiddens = jax.block_until_ready(self.teacher(teacher_params, batch))
        t1 = time.perf_counter()
        out = jax.block_until_ready(self.student(state["params"], teacher_params, batch, hiddens))
        t2 = time.perf_counter()
        new_state, metrics = jax.block_until_ready(self.update(state, *out))
        t3 = time.perf_counter()
        times = {"time/teacher": t1 - t0, "time/student_loss": t2 - t1, "time/update": t3 - t2}
        return new_state, metrics, times


def matmul_flops(n: int = 2048, dtype="float32") -> float:
    """FLOP/s of one jitted [n, n] @ [n, n] matmul on the default device (the box's practical peak; on CPU
    there is no spec-sheet number). Compiled once per (n, dtype); the call after the first is timed."""
    a = jnp.ones((n, n), dtype)
    fn = _matmul()
    jax.block_until_ready(fn(a, a))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(a, a))
    return 2 * n**3 / (time.perf_counter() - t0)


@functools.cache
def _matmul():
    return jax.jit(lambda x, y: x @ y)
