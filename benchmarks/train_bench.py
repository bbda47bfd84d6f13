"""Train-step speed for an experiment config: step-time split, tokens/s and MFU.

    python benchmarks/train_bench.py --config=configs/tiny.py[:arg] [--steps N] [--warmup W] [--json out.json]
    PYTHONPATH=. python benchmarks/train_bench.py --config=configs/bench_gpu.py --steps 3   # random weights

Configs with a `bench` section (configs/bench_gpu.py) get random weights of the named shapes, random prompt
tokens and no EOS: no model files, tokenizer or data set (`datasets` is never imported). Any other config
is built by the trainer's own `train.build` (its model folders, tokenizer, data, compiled step) in a
temporary workdir, and its batches come from the trainer's rollout.

Per step, after --warmup steps (which compile): the rollout (time/sample), then the step's pieces as
separately jitted programs (tsdkd_jax/train/perf.py SplitStep: time/teacher, time/student_loss,
time/update; their update is discarded), then the fused step the trainer runs (time/step), each timed to
block_until_ready; the table shows medians. tokens/s = response tokens / (time/sample + time/step), i.e.
the on-policy training throughput; scored tokens/s = (prompt + response) tokens / time/step; MFU = model FLOPs
of the scoring step / time/step / (peak bf16 × devices), where the device's peak is known (not on CPU);
achieved GFLOP/s = the same FLOPs / time/step, printed next to the box's matmul peak measured in the same
invocation after the steps (perf.matmul_flops: a 2048² matmul in the student's compute dtype, median of 3).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import models, parallel, sampling
from tsdkd_jax.sampling import interleaved
from tsdkd_jax.train import builder, loop, methods, perf, rollout
from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import state as state_lib
from tsdkd_jax.train import step as step_lib

TIMES = ("time/sample", "time/teacher", "time/student_loss", "time/update", "time/step")


def load_config(spec: str):
    """`path.py[:arg]` → the file's get_config(arg) (what ml_collections' config flag does)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


class Setup:
    """What one timed step needs: models, state, the fused and split steps, and a batch maker."""

    def __init__(self, config, workdir: str):
        self.config = c = config
        self.random, self.run = "bench" in c, None
        if self.random:
            self._init_random(c)
        else:
            self._init_built(c, workdir)
        kw = builder.step_kwargs(c, self.graphdef, self.teacher_graphdef, self.tx)
        self.split = perf.SplitStep(self.spec, **kw)
        if self.step_fn is None:
            self.step_fn = step_lib.jit_train_step(
                self.spec, **kw, state_shardings=self.shardings, teacher_params=self.teacher_params,
                mesh=self.mesh,
            )  # fmt: skip

    def _init_built(self, c, workdir):
        c.eval_every, c.eval_at_ends, c.checkpoint.export = 0, False, False
        self.run = r = builder.build(c, workdir)  # the trainer's Run: the same models, step and rollout
        self.key = rollout.run_key(r.state)
        self.mesh, self.spec, self.tx, self.step_fn = r.mesh, r.spec, r.tx, r.step_fn
        self.graphdef, self.teacher_graphdef, self.teacher_params = (
            r.graphdef,
            r.teacher_graphdef,
            r.teacher_params,
        )
        self.shardings, self.state = r.shardings, r.state
        self.student_config, self.teacher_config = r.model_config, r.teacher_config

    def close(self) -> None:
        if self.run is not None:
            loop.close(self.run)  # the checkpoint manager and the workdir lock

    def _init_random(self, c):
        devices = jax.devices()[: c.mesh.devices or None]
        config_lib.validate(c, device_count=len(devices), check_paths=False)
        self.mesh = parallel.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
        rules = {**parallel.DEFAULT_RULES, **c.mesh.rules.to_dict()}
        self.rules, self.batch_axes = rules, rules["batch"]
        shape_table = _shape_table()
        self.student_config = models.ModelConfig(**shape_table[c.bench.student])
        abstract, params = _random_model(
            self.student_config, c.student.compute_dtype, "float32", self.mesh, rules, c.bench.seed,
            remat=c.student.remat,
        )  # fmt: skip
        self.graphdef = nnx.split(abstract)[0]
        self.teacher_graphdef = self.teacher_params = self.teacher_config = None
        if methods.of(c).needs_teacher:
            self.teacher_config = models.ModelConfig(**shape_table[c.bench.teacher])
            t_abstract, self.teacher_params = _random_model(
                self.teacher_config, c.teacher.dtype, c.teacher.dtype, self.mesh,
                {**rules, **c.teacher.rules.to_dict()}, c.bench.seed + 1,
            )  # fmt: skip
            self.teacher_graphdef = nnx.split(t_abstract)[0]
        self.tx = state_lib.optimizer(c)
        p_shardings = state_lib.param_shardings(abstract, self.mesh, rules)
        self.shardings = state_lib.state_shardings(
            p_shardings, self.tx, jax.eval_shape(lambda p: p, params), self.mesh
        )
        self.state = state_lib.init_state(params, self.tx, c.seed, self.shardings)
        self.spec = step_lib.make_spec(c, pad_id=0, mesh=self.mesh, batch_axes=self.batch_axes)
        self.step_fn = None

    def _sample_interleaved(self, ids, mask, key, k: int, rules):
        """SKD's samples (the student proposes, the teacher corrects; no EOS) → (tokens, mask)."""
        s = self.config.sampling
        pairs = ((self.graphdef, self.state["params"]), (self.teacher_graphdef, self.teacher_params))
        states = [nnx.split(nnx.merge(g, p))[1] for g, p in pairs]  # Variables carry the logical axis names
        out = interleaved.generate_interleaved_from_state(
            self.graphdef, states[0], self.teacher_graphdef, states[1], ids, mask, accept_top_k=k,
            max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, rng=key,
            mesh=self.mesh, rules=rules, gather_weights=s.gather_weights,
        )  # fmt: skip
        return out.tokens, out.mask

    def make_batch(self, step: int) -> tuple[dict, float]:
        """The step's batch (sampled where the method samples) and the sampling time."""
        if not self.random:
            batch, t_sample, _, _ = rollout.step_batch(
                self.run, self.state["params"], step, next(self.run.iterator), self.key
            )
            return batch, t_sample
        c = self.config
        rng = np.random.default_rng([c.bench.seed, step])
        b, p, n = c.data.batch_size, c.bench.prompt_len, c.sampling.max_new_tokens
        glob = lambda x: rollout.to_global(x, self.mesh, self.batch_axes)
        ids = glob(rng.integers(1, self.student_config.vocab_size, (b, p)).astype(np.int32))
        mask = glob(np.ones((b, p), np.int32))
        t0 = time.perf_counter()
        who = methods.responder(c, on_policy_step=True)  # a "student" method samples every timed step
        if who is None:  # dataset responses: random tokens here
            tokens = glob(rng.integers(1, self.student_config.vocab_size, (b, n)).astype(np.int32))
            resp_mask = glob(np.ones((b, n), np.int32))
        else:
            by = {
                "teacher": (self.teacher_graphdef, self.teacher_params),
                "student": (self.graphdef, self.state["params"]),
            }[who]
            key, s_rules = sampling.sample_key(c.seed, step, 0), {**self.rules, "embed": None}
            if who == "student" and (k := methods.interleave_k(c)) is not None:  # SKD: teacher in the loop
                tokens, resp_mask = self._sample_interleaved(ids, mask, key, k, s_rules)
            else:
                tokens, resp_mask = rollout.sample(
                    *by, ids, mask, key, config=c, eos_ids=(), pad_id=0, mesh=self.mesh, rules=s_rules
                )
            jax.block_until_ready(tokens)
        batch = {"prompt_ids": ids, "prompt_mask": mask, "response_ids": tokens, "response_mask": resp_mask}
        return batch, time.perf_counter() - t0


def _timed_steps(s: Setup, steps: int, warmup: int) -> tuple[list[dict], dict]:
    """Rows of `warmup + steps` timed steps, and the last step's batch."""
    rows = []
    for i in range(warmup + steps):
        step = i + 1
        batch, t_sample = s.make_batch(step)
        _, _, times = s.split(s.state, s.teacher_params, batch)
        t0 = time.perf_counter()
        s.state, metrics = s.step_fn(s.state, s.teacher_params, batch)
        metrics = jax.device_get(metrics)
        t_step = time.perf_counter() - t0
        row = {"step": step, "warmup": i < warmup, "time/sample": t_sample, **times, "time/step": t_step,
               "loss": float(metrics["loss"]), "response_tokens": float(metrics["tokens"])}  # fmt: skip
        rows.append(row)
        print(
            f"step {step}{' (warm-up)' if i < warmup else ''}: "
            + " ".join(f"{k.split('/')[1]} {row[k]:.3f}s" for k in TIMES)
            + f" loss {row['loss']:.4f}",
            flush=True,
        )
    return rows, batch


def _shape_table():
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "bench_gpu.py"
    )
    spec = importlib.util.spec_from_file_location("bench_gpu_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SHAPES


def _random_model(cfg, dtype, param_dtype, mesh, rules, seed, remat=False):
    """(abstract model, pure-dict params) of a random Decoder, created directly in its sharding."""
    make = lambda: models.Decoder(
        cfg, rngs=nnx.Rngs(seed), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype), remat=remat
    )
    abstract = nnx.eval_shape(make)
    shardings = nnx.to_pure_dict(parallel.state_shardings(nnx.state(abstract), mesh, rules))
    params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(make())), out_shardings=shardings)()
    return abstract, params


def run(config_spec: str, steps: int, warmup: int) -> dict:
    config = load_config(config_spec)
    with tempfile.TemporaryDirectory(prefix="train_bench-") as workdir:
        t0 = time.perf_counter()
        s = Setup(config, workdir)
        setup_s = time.perf_counter() - t0
        rows = []
        try:
            rows, batch = _timed_steps(s, steps, warmup)
        finally:
            s.close()
    timed = [r for r in rows if not r["warmup"]] or rows
    med = {k: statistics.median(r[k] for r in timed) for k in TIMES}
    b, p = batch["prompt_ids"].shape
    n = batch["response_ids"].shape[1]
    flops = perf.step_flops(
        s.student_config, s.teacher_config, rows=b, seq_len=p + n, response_len=n,
        prepass=perf.has_prepass(s.spec),
    )  # fmt: skip
    device = s.mesh.devices.flat[0]
    peak = perf.peak_flops(device)
    n_dev = s.mesh.devices.size
    resp_tokens = statistics.median(r["response_tokens"] for r in timed)
    summary = {
        **med,
        "split_total": med["time/teacher"] + med["time/student_loss"] + med["time/update"],
        "compile_step_s": rows[0]["time/step"],
        "tokens_per_s": resp_tokens / (med["time/sample"] + med["time/step"]),
        "scored_tokens_per_s": b * (p + n) / med["time/step"],
        "flops_per_step": flops,
        "mfu": None if peak is None else flops / med["time/step"] / (peak * n_dev),
        "gflops": flops / med["time/step"] / 1e9,
        "matmul_peak_gflops": statistics.median(
            perf.matmul_flops(dtype=s.config.student.compute_dtype) for _ in range(3)
        )
        / 1e9,
        "peak_memory_gib": _peak_memory(device),
    }
    n_s = state_lib.count_params(s.state["params"])
    n_t = 0 if s.teacher_params is None else state_lib.count_params(s.teacher_params)
    c = s.config
    return {
        "config": config_spec,
        "method": c.method,
        "random_weights": s.random,
        "device": f"{device.device_kind} × {n_dev}",
        "platform": device.platform,
        "jax": jax.__version__,
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg": os.getloadavg(),
        "student_params": n_s,
        "teacher_params": n_t,
        "batch": b,
        "prompt_len": p,
        "response_len": n,
        "grad_accum": c.optim.grad_accum,
        "student_compute": c.student.compute_dtype,
        "teacher_dtype": c.teacher.dtype,
        "setup_s": setup_s,
        "steps": steps,
        "warmup": warmup,
        "median": summary,
        "rows": rows,
    }


def _peak_memory(device) -> float | None:
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 (not every backend has memory stats)
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def print_table(result: dict) -> None:
    m = result["median"]
    fmt = lambda v, unit="s": "-" if v is None else (f"{v:.4f} {unit}" if unit == "s" else f"{v:,.1f}")
    lines = [
        ("config", result["config"]),
        ("device", f"{result['device']} (jax {result['jax']})"),
        ("student / teacher params", f"{_count(result['student_params'])} / {_count(result['teacher_params'])}"),
        ("batch × (prompt + response)", f"{result['batch']} × ({result['prompt_len']} + {result['response_len']})"),
        ("steps timed (after warm-up)", f"{result['steps']} (after {result['warmup']})"),
        ("time/sample", fmt(m["time/sample"])),
        ("time/teacher (split)", fmt(m["time/teacher"])),
        ("time/student_loss (split)", fmt(m["time/student_loss"])),
        ("time/update (split)", fmt(m["time/update"])),
        ("split total", fmt(m["split_total"])),
        ("time/step (fused)", fmt(m["time/step"])),
        ("first fused step (compile)", fmt(m["compile_step_s"])),
        ("tokens/s (response, incl. sampling)", fmt(m["tokens_per_s"], "")),
        ("scored tokens/s (fused step)", fmt(m["scored_tokens_per_s"], "")),
        ("model TFLOP per step", f"{m['flops_per_step'] / 1e12:.4f}"),
        ("MFU (fused step)", "- (peak unknown)" if m["mfu"] is None else f"{100 * m['mfu']:.1f} %"),
        ("achieved GFLOP/s (fused step)", f"{m['gflops']:.1f}"),
        ("matmul peak GFLOP/s (this run, 1 device)", f"{m['matmul_peak_gflops']:.1f}"),
        ("peak device memory", "-" if m["peak_memory_gib"] is None else f"{m['peak_memory_gib']:.1f} GiB"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in lines)
    print(f"| {'metric':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in lines:
        print(f"| {k:<{width}} | {v} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="configs/<file>.py[:arg]")
    p.add_argument("--steps", type=int, default=5, help="timed steps (medians)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compiles)")
    p.add_argument("--json", default="", help="write the result here")
    args = p.parse_args(argv)
    result = run(args.config, args.steps, args.warmup)
    print_table(result)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
