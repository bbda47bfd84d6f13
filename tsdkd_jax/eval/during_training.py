"""Benchmark accuracy during training: `config.eval.benchmarks` scored on a held-out subset at each evaluation.

The student is scored greedily on the same seeded subset of each benchmark whenever the held-out KL is
evaluated (every `eval_every` steps; steps 0 and `total_steps` with `eval_at_ends`), and the metrics rows
get `eval/<name>/accuracy`, `eval/<name>/ci95_low`, `eval/<name>/ci95_high` (and `eval/<name>/n`). Native
benchmarks only (the lm-eval ones run with `python -m tsdkd_jax.eval` on the export). Single-process runs only:
the scorer pulls the generated tokens to one host.
"""

from __future__ import annotations

import logging
import time

import ml_collections
from flax import nnx

from tsdkd_jax.eval import suite
from tsdkd_jax.eval.benchmarks import get_benchmark

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.benchmarks = ""  # comma-separated native benchmarks scored during training, e.g. "gsm8k,math500"
    c.size = 64  # held-out subset: examples per benchmark, drawn by config.seed (0 = the whole test split)
    c.data_dir = ""  # folder of local files <name>.jsonl/.json/.parquet (offline); "" = the hub
    c.files = ""  # "name=path,..." local files (win over data_dir)
    c.batch_size = 8  # prompts per generation batch
    c.max_new_tokens = 0  # generation budget (0 = each benchmark's own)
    return c


def check(config, *, process_count: int = 1, check_paths: bool = True) -> None:
    """config.eval: known native benchmark names, sizes, files that exist (errors name the field)."""
    e = config.eval
    if not e.benchmarks:
        return
    names = suite.parse_names(e.benchmarks, "eval.benchmarks")
    lm_eval_ones = [n for n in names if get_benchmark(n).to_example is None]
    if lm_eval_ones:
        raise ValueError(f"eval.benchmarks: {lm_eval_ones} run through lm-eval, not during training; score "
                         "the export with python -m tsdkd_jax.eval")  # fmt: skip
    for field in ("size", "max_new_tokens"):
        if e[field] < 0:
            raise ValueError(f"eval.{field}: must be >= 0, got {e[field]}")
    if e.batch_size < 1:
        raise ValueError(f"eval.batch_size: must be >= 1, got {e.batch_size}")
    if not (config.eval_every or config.eval_at_ends):
        raise ValueError("eval.benchmarks: set eval_every > 0 or eval_at_ends=True to say when to score them")
    if process_count > 1:
        raise ValueError("eval.benchmarks: scored in single-process runs only (use python -m tsdkd_jax.eval)")
    if check_paths:
        _sources(config)


def _sources(config) -> dict[str, str | None]:
    e = config.eval
    names = suite.parse_names(e.benchmarks, "eval.benchmarks")
    files = suite.parse_files(e.files, "eval.files")
    return suite.sources(
        names, data_dir=e.data_dir, files=files, field="eval.data_dir", files_field="eval.files"
    )


def due(config, step: int) -> bool:
    """Whether `step` is an evaluation step (the held-out KL's schedule)."""
    if step == 0:
        return bool(config.eval_at_ends)
    every = config.eval_every and step % config.eval_every == 0
    return bool(every or (config.eval_at_ends and step == config.total_steps))


def make_hook(trainer):
    """A Trainer hook (step, params) -> rows of benchmark accuracy at evaluation steps; None without
    benchmarks. The subsets are read once, here."""
    c = trainer.config
    if not c.eval.benchmarks:
        return None
    sets = {n: suite.load(n, p, size=c.eval.size, seed=c.seed) for n, p in _sources(c).items()}

    def hook(step: int, params) -> dict | None:
        if not due(c, step):
            return None
        model = nnx.merge(trainer.graphdef, params)
        row = {}
        for name, examples in sets.items():
            t0 = time.perf_counter()
            m = suite.score(
                model, trainer.tokenizer, name, examples, eos_token_ids=trainer.eos_ids,
                pad_token_id=trainer.pad_id, batch_size=c.eval.batch_size,
                max_new_tokens=c.eval.max_new_tokens, mesh=trainer.mesh,
            )  # fmt: skip
            row.update({f"eval/{name}/{k}": m[k] for k in ("accuracy", "ci95_low", "ci95_high", "n")})
            log.info("step %d: %s accuracy %.3f (n=%d, %.1f s)", step, name, m["accuracy"], m["n"],
                     time.perf_counter() - t0)  # fmt: skip
        return row

    return hook


def with_benchmarks(trainer, hook=None):
    """`hook` combined with the benchmark hook of `trainer.config.eval` (either may be None)."""
    bench = make_hook(trainer)
    if bench is None or hook is None:
        return bench or hook

    def both(step, params):
        rows = [h(step, params) for h in (hook, bench)]
        merged = {k: v for r in rows if r for k, v in r.items()}
        return merged or None

    return both
