"""Small-model train-step speed on CPU: achieved GFLOP/s of the testbed's SFT step against the box's matmul peak.

    PYTHONPATH=. python benchmarks/small_bench.py [--model teacher|student] [--rounds 15] [--json out.json]

Builds the testbed's model shape (configs/testbed.py: teacher 3 × 96 or student 1 × 48) with random weights
and the trained tokenizer's vocabulary (--vocab), a random SFT batch (testbed.sft_batch rows × (--prompt_len +
data.max_response_len) tokens) and the trainer's fused step (step.jit_train_step, AdamW, grad clip) once per
execution policy:

  scan        the layers under lax.scan, the loss in loss.chunk_size chunks (the step before issue 16, but
              with the changes in every row, below)
  full_loss   the layers under lax.scan, the loss on all tokens' logits at once (step.FULL_LOGITS_MAX)
  unrolled    the layers as a Python loop (models.Decoder.scan_layers=False), the loss chunked
  default     what the trainer runs now for this shape (Decoder's and the step's default policies)

--baseline DIR adds a row "baseline": the same step built from another checkout's code (e.g. /work/main), run
in a child process that steps when asked, interleaved in the same rounds. Besides that, both code paths live
in this checkout; the step before issue 16 also ran its single micro-batch in a
one-iteration scan, selected each layer's attention mask with a where and ran gate and up as two matmuls
(layers.FUSED_GATE_UP_MAX): those changes are in every row.

The policies run interleaved (one step of each per round) so that load from other jobs on a shared box hits
them alike; the table has medians over rounds. The box's peak is a large fp32 matmul timed in the same rounds
(perf.matmul_flops). All policies start from the same state and batch: the first step's loss and updated
parameters are compared (max |Δ|) to show that they compute the same step.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# run from a checkout; the --baseline child imports the baseline checkout's package instead
sys.path.insert(
    0, os.environ.get("SMALL_BENCH_CHECKOUT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tsdkd_jax import models, parallel
from tsdkd_jax.train import perf
from tsdkd_jax.train import state as state_lib
from tsdkd_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = {"scan": (True, 0), "full_loss": (True, None), "unrolled": (False, 0), "default": (None, None)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def testbed_config():
    spec = importlib.util.spec_from_file_location(
        "testbed_config", os.path.join(ROOT, "configs", "testbed.py")
    )
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
        scan_layers, full_logits_max = POLICIES[name]
        c = trainer_config
        kw = {} if scan_layers is None else {"scan_layers": scan_layers}  # None: also runs on older checkouts
        model = nnx.eval_shape(lambda: models.Decoder(cfg, rngs=nnx.Rngs(0), **kw))
        self.graphdef = nnx.split(model)[0]
        self.tx = state_lib.optimizer(c)
        p_shardings = state_lib.param_shardings(model, mesh, rules)
        abstract = jax.eval_shape(lambda p: p, params)
        self.shardings = state_lib.state_shardings(p_shardings, self.tx, abstract, mesh)
        fresh = jax.tree.map(jnp.copy, params)  # init_state donates its params
        self.state = state_lib.init_state(fresh, self.tx, c.seed, self.shardings)
        spec = step_lib.make_spec(c, pad_id=0, mesh=mesh, batch_axes=rules["batch"])
        if full_logits_max is not None:
            spec = dataclasses.replace(spec, full_logits_max=full_logits_max)
        self.fn = step_lib.jit_train_step(
            spec, graphdef=self.graphdef, teacher_graphdef=None, tx=self.tx, lr_fn=state_lib.schedule(c),
            state_shardings=self.shardings, teacher_params=None, mesh=mesh,
        )  # fmt: skip
        self.times, self.cpu = [], []
        # a checkout from before issue 12 (e.g. the --baseline) still takes an unused rng argument
        takes_rng = "rng" in inspect.signature(step_lib.train_step).parameters
        self.extra = (jax.random.key(c.seed),) if takes_rng else ()

    def step(self, batch):
        """(wall seconds, process CPU seconds, loss) of one step."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.state, metrics = self.fn(self.state, None, batch, *self.extra)
        metrics = jax.device_get(metrics)
        return time.perf_counter() - t0, time.process_time() - c0, float(metrics["loss"])


class Baseline:
    """The "default" policy of another checkout, in a child process that runs one step per request."""

    def __init__(self, checkout: str, argv: list[str]):
        env = {**os.environ, "SMALL_BENCH_CHECKOUT": os.path.abspath(checkout)}
        env["PYTHONPATH"] = env["SMALL_BENCH_CHECKOUT"]
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--serve"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.times, self.cpu, self.state = [], [], None

    def step(self, batch=None):
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the --baseline child exited (see its stderr above)")
        return tuple(json.loads(line))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(model: str, vocab: int, prompt_len: int) -> None:
    """The --baseline child: build the "default" policy, then one step per "step" line on stdin."""
    setup = Setup(model, vocab, prompt_len)
    policy = setup.policy("default")
    for _ in sys.stdin:
        print(json.dumps(policy.step(setup.batch)), flush=True)


def random_batch(rows, prompt_len, response_len, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda n: jnp.asarray(rng.integers(1, vocab, (rows, n)), jnp.int32)
    ones = lambda n: jnp.ones((rows, n), jnp.int32)
    return {"prompt_ids": ids(prompt_len), "prompt_mask": ones(prompt_len),
            "response_ids": ids(response_len), "response_mask": ones(response_len)}  # fmt: skip


def _max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class Setup:
    """The testbed's SFT step inputs: trainer config, model shape, initial params, mesh and one batch."""

    def __init__(self, model: str, vocab: int, prompt_len: int):
        config = testbed_config()
        tb, c = config.testbed, config.base
        # as the testbed's run sets its process up, if the checkout has it (an editable install's finder would
        # hand an older --baseline checkout this one's module)
        if os.path.isfile(os.path.join(os.path.dirname(models.__file__), "..", "hostmem.py")):
            from tsdkd_jax import hostmem

            self.inline = hostmem.apply(c)
        self.shape = shape = tb[model]
        c.method, c.total_steps, c.optim.lr = "sft", shape.sft_steps, shape.sft_lr
        c.data.batch_size = tb.sft_batch
        self.config, self.cfg = c, model_config(shape, vocab)
        self.mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
        self.rules = dict(parallel.DEFAULT_RULES)
        self.params = nnx.to_pure_dict(nnx.state(models.Decoder(self.cfg, rngs=nnx.Rngs(0))))
        self.batch = random_batch(tb.sft_batch, prompt_len, c.data.max_response_len, vocab)
        n = c.data.max_response_len
        self.flops = perf.step_flops(
            self.cfg, None, rows=tb.sft_batch, seq_len=prompt_len + n, response_len=n, prepass=False
        )
        self.label = f"{model} {shape.layers} × {shape.hidden}"
        self.batch_label = f"{tb.sft_batch} × ({prompt_len} + {n})"

    def policy(self, name):
        return Policy(name, self.cfg, self.config, self.params, self.mesh, self.rules)


def run(model: str, vocab: int, prompt_len: int, rounds: int, baseline: str = "") -> dict:
    s = Setup(model, vocab, prompt_len)
    policies = {name: s.policy(name) for name in POLICIES}
    if baseline:
        policies["baseline"] = Baseline(baseline, ["--model", model, "--vocab", str(vocab),
                                                   "--prompt_len", str(prompt_len)])  # fmt: skip
    try:
        first = {name: p.step(s.batch) for name, p in policies.items()}  # compiles; same state and batch
        matmul = []
        for _ in range(rounds):
            for p in policies.values():
                wall, cpu, _ = p.step(s.batch)
                p.times.append(wall)
                p.cpu.append(cpu)
            matmul.append(perf.matmul_flops())
    finally:
        if baseline:
            policies["baseline"].close()
    peak = statistics.median(matmul)
    rows = {}
    for name, p in policies.items():
        t = statistics.median(p.times)
        rows[name] = {"step_ms": 1e3 * t, "cpu_ms": 1e3 * statistics.median(p.cpu), "gflops": s.flops / t / 1e9,
                      "of_peak": s.flops / t / peak, "compile_step_s": first[name][0],
                      "loss_diff": abs(first[name][2] - first["scan"][2]),
                      "params_diff": None if p.state is None else _max_diff(p.state["params"], policies["scan"].state["params"])}  # fmt: skip
    ref = "baseline" if baseline else "scan"
    for row in rows.values():
        row["speedup"] = rows[ref]["step_ms"] / row["step_ms"]
        row["cpu_speedup"] = rows[ref]["cpu_ms"] / row["cpu_ms"]
    return {
        "inline_dispatch": getattr(s, "inline", False),
        "model": s.label, "vocab": vocab, "params": state_lib.count_params(s.params), "batch": s.batch_label,
        "gflop_per_step": s.flops / 1e9, "matmul_peak_gflops": peak / 1e9, "rounds": rounds, "reference": ref,
        "host": f"{platform.machine()}, {os.cpu_count()} cores", "jax": jax.__version__,
        "load_avg": os.getloadavg(), "policies": rows,
    }  # fmt: skip


def print_table(r: dict) -> None:
    print(f"{r['model']}, {r['params'] / 1e6:.2f} M params, vocab {r['vocab']}, batch {r['batch']}, "
          f"{r['gflop_per_step']:.2f} GFLOP/step; fp32 matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s "
          f"(same rounds); {r['rounds']} rounds; load {r['load_avg'][0]:.1f}; this checkout's rows with "
          f"cpu_inline_dispatch {'on' if r['inline_dispatch'] else 'off'}")  # fmt: skip
    ref = r["reference"]
    print(
        f"| policy | step ms | GFLOP/s | % of matmul peak | × {ref} | CPU ms | CPU × {ref} | Δloss | Δparams |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in r["policies"].items():
        dp = "-" if row["params_diff"] is None else f"{row['params_diff']:.1e}"
        print(f"| {name} | {row['step_ms']:.1f} | {row['gflops']:.1f} | {100 * row['of_peak']:.1f} | "
              f"{row['speedup']:.2f} | {row['cpu_ms']:.0f} | {row['cpu_speedup']:.2f} | {row['loss_diff']:.1e} | "
              f"{dp} |")  # fmt: skip
    print("Δloss, Δparams: max |difference| from the scan policy after the first step (same state and batch)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="teacher", choices=("teacher", "student"))
    p.add_argument("--vocab", type=int, default=419, help="the testbed tokenizer's size (len(tokenizer))")
    p.add_argument(
        "--prompt_len", type=int, default=64, help="the SFT batch's prompt length (data.max_prompt_len)"
    )
    p.add_argument("--rounds", type=int, default=15, help="timed steps per policy (medians)")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--baseline", default="", help="another checkout (e.g. /work/main): its step as a row")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the --baseline child
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.model, args.vocab, args.prompt_len)
    result = run(args.model, args.vocab, args.prompt_len, args.rounds, args.baseline)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
