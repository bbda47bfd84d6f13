"""Small-model train-step speed on CPU: achieved GFLOP/s of the testbed's SFT step against the box's matmul peak.

    PYTHONPATH=. python benchmarks/small_bench.py [--model teacher|student] [--rounds 15] [--json out.json]

Builds the testbed's model shape (configs/testbed.py: teacher 3 × 96 or student 1 × 48) with random weights
and the trained tokenizer's vocabulary (--vocab), a random SFT batch (testbed.sft_batch rows × (--prompt_len +
data.max_response_len) tokens) and the trainer's fused step (step.jit_train_step, AdamW, grad clip) once per
execution policy:

  scan      the layers under lax.scan, the loss in loss.chunk_size chunks (before issue 16)
  unrolled  the layers as a Python loop (models.Decoder.scan_layers=False), the same chunked loss
  default   what the trainer runs now for this shape (Decoder's default layer policy, the config's loss path)

The policies run interleaved (one step of each per round) so that load from other jobs on a shared box hits
them alike; the table has medians over rounds. The box's peak is a large fp32 matmul timed in the same rounds
(perf.matmul_flops). All policies start from the same state and batch: the first step's loss and updated
parameters are compared (max |Δ|) to show that they compute the same step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import models, parallel
from tsdkd_jax.train import perf
from tsdkd_jax.train import state as state_lib
from tsdkd_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# policy → (Decoder.scan_layers, loss.chunk_size or None for the config's)
POLICIES = {"scan": (True, None), "unrolled": (False, None), "default": (None, None)}


def testbed_config():
    spec = importlib.util.spec_from_file_location("testbed_config", os.path.join(ROOT, "configs", "testbed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def model_config(shape, vocab: int) -> models.ModelConfig:
    """The testbed's Qwen2-style shape (tsdkd_jax.train.tiny.qwen2_hf_config) as a ModelConfig."""
    return models.ModelConfig(
        vocab_size=vocab, hidden_size=shape.hidden, intermediate_size=shape.ffw, num_layers=shape.layers,
        num_heads=shape.heads, num_kv_heads=shape.kv_heads, head_dim=shape.hidden // shape.heads,
        qkv_bias=True, model_type="qwen2",
    )  # fmt: skip


class Policy:
    """One execution policy's jitted step and its own copy of the shared initial state."""

    def __init__(self, name, cfg, trainer_config, params, mesh, rules):
        scan_layers, chunk = POLICIES[name]
        c = trainer_config.copy_and_resolve_references()
        if chunk is not None:
            c.loss.chunk_size = chunk
        model = nnx.eval_shape(lambda: models.Decoder(cfg, rngs=nnx.Rngs(0), scan_layers=scan_layers))
        self.graphdef = nnx.split(model)[0]
        self.tx = state_lib.optimizer(c)
        p_shardings = state_lib.param_shardings(model, mesh, rules)
        abstract = jax.eval_shape(lambda p: p, params)
        self.shardings = state_lib.state_shardings(p_shardings, self.tx, abstract, mesh)
        fresh = jax.tree.map(jnp.copy, params)  # init_state donates its params
        self.state = state_lib.init_state(fresh, self.tx, c.seed, self.shardings)
        spec = step_lib.make_spec(c, pad_id=0, mesh=mesh, batch_axes=rules["batch"])
        self.fn = step_lib.jit_train_step(
            spec, graphdef=self.graphdef, teacher_graphdef=None, tx=self.tx, lr_fn=state_lib.schedule(c),
            state_shardings=self.shardings, teacher_params=None, mesh=mesh,
        )  # fmt: skip
        self.times = []

    def step(self, batch):
        t0 = time.perf_counter()
        self.state, metrics = self.fn(self.state, None, batch, jnp.zeros((2,), jnp.uint32))
        metrics = jax.device_get(metrics)
        return time.perf_counter() - t0, metrics


def random_batch(rows, prompt_len, response_len, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda n: jnp.asarray(rng.integers(1, vocab, (rows, n)), jnp.int32)
    ones = lambda n: jnp.ones((rows, n), jnp.int32)
    return {"prompt_ids": ids(prompt_len), "prompt_mask": ones(prompt_len),
            "response_ids": ids(response_len), "response_mask": ones(response_len)}  # fmt: skip


def _max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run(model: str, vocab: int, prompt_len: int, rounds: int, names=tuple(POLICIES)) -> dict:
    config = testbed_config()
    tb, c = config.testbed, config.base
    shape = tb[model]
    c.method, c.total_steps, c.optim.lr, c.data.batch_size = "sft", shape.sft_steps, shape.sft_lr, tb.sft_batch
    cfg = model_config(shape, vocab)
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    rules = dict(parallel.DEFAULT_RULES)
    params = nnx.to_pure_dict(nnx.state(models.Decoder(cfg, rngs=nnx.Rngs(0))))
    policies = {name: Policy(name, cfg, c, params, mesh, rules) for name in names}
    batch = random_batch(tb.sft_batch, prompt_len, c.data.max_response_len, vocab)
    first = {name: p.step(batch) for name, p in policies.items()}  # compiles; same state and batch
    ref = names[0]
    check = {name: {"loss_diff": abs(float(first[name][1]["loss"]) - float(first[ref][1]["loss"])),
                    "params_diff": _max_diff(p.state["params"], policies[ref].state["params"])}
             for name, p in policies.items()}  # fmt: skip
    matmul = []
    for _ in range(rounds):
        for p in policies.values():
            p.times.append(p.step(batch)[0])
        matmul.append(perf.matmul_flops())
    flops = perf.step_flops(cfg, None, rows=tb.sft_batch, seq_len=prompt_len + c.data.max_response_len,
                            response_len=c.data.max_response_len, prepass=False)  # fmt: skip
    peak = statistics.median(matmul)
    rows = {}
    for name, p in policies.items():
        t = statistics.median(p.times)
        rows[name] = {"step_ms": 1e3 * t, "gflops": flops / t / 1e9, "of_peak": flops / t / peak,
                      "compile_step_s": first[name][0], **check[name]}  # fmt: skip
    base = rows[ref]["step_ms"]
    for row in rows.values():
        row["speedup"] = base / row["step_ms"]
    return {
        "model": f"{model} {shape.layers} × {shape.hidden}", "vocab": vocab, "params": state_lib.count_params(params),
        "batch": f"{tb.sft_batch} × ({prompt_len} + {c.data.max_response_len})", "gflop_per_step": flops / 1e9,
        "matmul_peak_gflops": peak / 1e9, "rounds": rounds, "host": f"{platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__, "load_avg": os.getloadavg(), "policies": rows,
    }  # fmt: skip


def print_table(r: dict) -> None:
    print(f"{r['model']}, {r['params'] / 1e6:.2f} M params, vocab {r['vocab']}, batch {r['batch']}, "
          f"{r['gflop_per_step']:.2f} GFLOP/step; fp32 matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s "
          f"(same rounds); {r['rounds']} rounds; load {r['load_avg'][0]:.1f}")  # fmt: skip
    print("| policy | step ms | GFLOP/s | % of matmul peak | × scan | first-step Δloss | Δparams |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in r["policies"].items():
        print(f"| {name} | {row['step_ms']:.1f} | {row['gflops']:.1f} | {100 * row['of_peak']:.1f} | "
              f"{row['speedup']:.2f} | {row['loss_diff']:.1e} | {row['params_diff']:.1e} |")  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="teacher", choices=("teacher", "student"))
    p.add_argument("--vocab", type=int, default=419, help="the testbed tokenizer's size (len(tokenizer))")
    p.add_argument("--prompt_len", type=int, default=60, help="the SFT batch's padded prompt length")
    p.add_argument("--rounds", type=int, default=15, help="timed steps per policy (medians)")
    p.add_argument("--json", default="", help="write the result here")
    args = p.parse_args(argv)
    result = run(args.model, args.vocab, args.prompt_len, args.rounds)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
