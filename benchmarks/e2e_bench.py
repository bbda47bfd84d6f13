"""The trainer's steady-state step (the real loop) against train_bench's compute (sample + fused step).

    PYTHONPATH=. python benchmarks/e2e_bench.py [--steps 6] [--warmup 2] [--json out.json] [--results RESULTS.md]

Cases (configs/tiny.py, eval, export and checkpoints out of the way):
  tiny          the config as it is (16 new tokens)
  tiny_128      128 new tokens
  half_uncut    128 new tokens, every response ends after 60 tokens (the sampler decodes 60 tokens, as
                when every row emits EOS there; the rest of the cap is padding), scored on the whole cap
                (sampling.length_bucket = 128)
  half_cut      the same responses, cut to the 64-token bucket (sampling.length_bucket = 64, the default)
For each case: `loop` = the median interval between consecutive steps of loop.train_and_evaluate (a hook records the
time after each step's dispatch; in the steady state the interval is the loop's step time, sampling, host
work and metrics pulls included); `compute` = the median of (sampling + the fused step, blocked) timed the
way benchmarks/train_bench.py does on a Trainer of the same config. Ratios: loop / compute, and half_cut's
loop / half_uncut's loop. One invocation; medians; the box's load is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import jax
import jax.numpy as jnp

from benchmarks import train_bench
from tsdkd_jax.train import builder, loop, rollout

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.py")
CASES = {
    "tiny": {},
    "tiny_128": {"sampling.max_new_tokens": 128},
    "half_uncut": {"sampling.max_new_tokens": 128, "sampling.length_bucket": 128, "_stop_after": 60},
    "half_cut": {"sampling.max_new_tokens": 128, "sampling.length_bucket": 64, "_stop_after": 60},
}


def make_config(case: str, steps: int):
    c = train_bench.load_config(TINY)
    c.total_steps, c.log_every, c.eval_every, c.eval_at_ends = steps, 1, 0, False
    c.checkpoint.export, c.checkpoint.every, c.checkpoint.async_save = False, 10**6, False
    for key, value in CASES[case].items():
        if not key.startswith("_"):
            section, field = key.split(".")
            c[section][field] = value
    return c


@contextlib.contextmanager
def stopping_after(after: int | None):
    """Every response ends after `after` tokens, as when all rows emit EOS there: the sampler decodes
    `after` tokens (its loop stops once every row has ended) and the rest of the cap is padding. Patches
    rollout.sample, which the run's sampler calls go through, for the duration."""
    sample = rollout.sample

    def stopped(*args, config, pad_id, **kw):
        s = config.sampling
        cap, s.max_new_tokens = s.max_new_tokens, after
        try:
            tokens, mask = sample(*args, config=config, pad_id=pad_id, **kw)
        finally:
            s.max_new_tokens = cap
        pad = ((0, 0), (0, cap - after))
        return jnp.pad(tokens, pad, constant_values=pad_id), jnp.pad(mask, pad)

    rollout.sample = sample if after is None else stopped
    try:
        yield
    finally:
        rollout.sample = sample


def time_loop(case: str, steps: int, warmup: int) -> list[float]:
    """Intervals between consecutive steps of the real training loop, after `warmup` steps."""
    stamps = []
    with (
        tempfile.TemporaryDirectory(prefix="e2e_bench-") as workdir,
        stopping_after(CASES[case].get("_stop_after")),
    ):
        run = builder.build(make_config(case, warmup + steps), workdir)
        loop.train_and_evaluate(run, hook=lambda step, params: stamps.append(time.perf_counter()) and None)
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]  # stamps[0]: step 0


def time_compute(case: str, steps: int, warmup: int) -> tuple[list[float], list[int]]:
    """train_bench's compute: sampling + the fused step (blocked), on a run of the same config; with the
    response lengths the steps scored."""
    times, lengths = [], set()
    with (
        tempfile.TemporaryDirectory(prefix="e2e_bench-") as workdir,
        stopping_after(CASES[case].get("_stop_after")),
    ):
        s = train_bench.Setup(make_config(case, warmup + steps), workdir)
        try:
            for i in range(warmup + steps):
                batch, t_sample = s.make_batch(i + 1)
                t0 = time.perf_counter()
                s.state, metrics = s.step_fn(s.state, s.teacher_params, batch)
                jax.device_get(metrics)
                if i >= warmup:
                    times.append(t_sample + time.perf_counter() - t0)
                    lengths.add(int(batch["response_ids"].shape[1]))
        finally:
            s.close()
    return times, sorted(lengths)


def run(steps: int, warmup: int, cases=tuple(CASES)) -> dict:
    rows = {}
    for case in cases:
        loop, (compute, lengths) = time_loop(case, steps, warmup), time_compute(case, steps, warmup)
        rows[case] = {"loop_s": statistics.median(loop), "compute_s": statistics.median(compute),
                      "scored_lengths": lengths,
                      "loop_all": loop, "compute_all": compute}  # fmt: skip
        rows[case]["loop_over_compute"] = rows[case]["loop_s"] / rows[case]["compute_s"]
        print(
            f"{case}: loop {rows[case]['loop_s']:.4f} s, compute {rows[case]['compute_s']:.4f} s", flush=True
        )
    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"), "steps": steps,
              "warmup": warmup, "host": f"{platform.machine()}, {os.cpu_count()} cores",
              "device": str(jax.devices()[0].device_kind), "load_avg": os.getloadavg(), "cases": rows}  # fmt: skip
    if "half_cut" in rows and "half_uncut" in rows:
        result["half_cut_over_uncut"] = rows["half_cut"]["loop_s"] / rows["half_uncut"]["loop_s"]
    return result


def table(result: dict) -> str:
    lines = [
        "| case | scored length | loop step (median) | sample + fused step (median) | loop / compute |",
        "|---|---|---|---|---|",
    ]
    for case, r in result["cases"].items():
        n = ",".join(map(str, r["scored_lengths"]))
        lines.append(
            f"| {case} | {n} | {r['loop_s']:.4f} s | {r['compute_s']:.4f} s | {r['loop_over_compute']:.2f}× |"
        )
    if "half_cut_over_uncut" in result:
        lines.append(f"\nhalf-cap batch, cut / uncut loop step: {result['half_cut_over_uncut']:.2f}×")
    return "\n".join(lines)


def append_results(path: str, result: dict, command: str) -> None:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    with open(path, "a") as f:
        f.write(f"\n## e2e_bench: the trainer's loop step against sample + fused step ({result['date']})\n\n")
        f.write(f"Machine: {result['host']}, {result['device']}; `uptime`: {uptime}\n\n")
        f.write(f"Command: `{command}`\n\n{table(result)}\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per case (medians)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiles)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--results", default="", help="append a dated section to this markdown file")
    args = p.parse_args(argv)
    result = run(args.steps, args.warmup, tuple(args.cases.split(",")))
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.results:
        append_results(
            args.results, result, "python benchmarks/e2e_bench.py " + " ".join(argv or sys.argv[1:])
        )


if __name__ == "__main__":
    main()
