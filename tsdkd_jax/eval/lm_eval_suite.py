"""BBH, MuSR and IFEval through lm-evaluation-harness (the `eval` extra) on our JAX model, as one result.

The task's data comes from the hub (lm-eval reads it itself). The headline metric per benchmark is lm-eval's:
BBH exact match after its answer extraction, MuSR normalised accuracy, IFEval prompt-level strict accuracy;
the 95 % interval is lm-eval's standard error × 1.96 (a normal interval, clipped to [0, 1]).
"""

from __future__ import annotations

from typing import Any

from tsdkd_jax.eval.benchmarks import get_benchmark
from tsdkd_jax.eval.metrics import Z95

# lm-eval result keys ("metric,filter"), the first one present is the headline
HEADLINE = (
    "exact_match,get-answer",
    "prompt_level_strict_acc,none",
    "acc_norm,none",
    "acc,none",
    "exact_match,flexible-extract",
    "exact_match,none",
)


def headline(results: dict[str, Any], task: str) -> dict[str, float]:
    """{accuracy, ci95_low, ci95_high, n, metric} of `task` in lm-eval's `simple_evaluate` output."""
    row = results["results"].get(task)
    if row is None:
        raise ValueError(f"lm-eval returned no result for task {task!r} (got {sorted(results['results'])})")
    key = next((k for k in HEADLINE if isinstance(row.get(k), int | float)), None)
    if key is None:
        raise ValueError(f"lm-eval task {task!r}: none of the metrics {HEADLINE} in its result {sorted(row)}")
    metric, _, filt = key.partition(",")
    acc = float(row[key])
    stderr = row.get(f"{metric}_stderr,{filt}")
    half = Z95 * float(stderr) if isinstance(stderr, int | float) else float("nan")
    samples = results.get("n-samples", {})
    subtasks = [t for t in samples if t == task or t.startswith(f"{task}_")] or [task]
    n = sum(int(samples.get(t, {}).get("effective", 0)) for t in subtasks)
    return {"accuracy": acc, "ci95_low": max(0.0, acc - half), "ci95_high": min(1.0, acc + half),
            "n": n, "metric": key}  # fmt: skip


def score(model, tokenizer, name: str, *, eos_token_ids, batch_size: int = 8, limit: int = 0,
          max_new_tokens: int = 0, seed: int = 0, task: str = "", task_manager=None) -> dict[str, Any]:  # fmt: skip
    """Runs the benchmark's lm-eval task on `model` (greedy, the task's own prompts and few-shot; `limit`: its
    first N documents, lm-eval's meaning). `task`/`task_manager` run another (e.g. local) lm-eval task."""
    try:
        import lm_eval

        from tsdkd_jax.eval.harness import TsdkdLM
    except ImportError as e:
        raise ImportError(f"{name} runs through lm-eval: pip install 'tsdkd_jax[eval]'") from e
    task = task or get_benchmark(name).lm_eval_task
    lm = TsdkdLM(model=model, tokenizer=tokenizer, eos_token_ids=tuple(eos_token_ids), batch_size=batch_size,
                 max_gen_toks=max_new_tokens or 256, seed=seed)  # fmt: skip
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[task], limit=limit or None, random_seed=seed, task_manager=task_manager
    )
    return headline(results, task)
