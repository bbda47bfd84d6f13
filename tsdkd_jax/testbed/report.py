"""The testbed's results: a Markdown table (printed and written to results.md), results.json, results.png."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time

from tsdkd_jax.testbed import summary as summary_lib

log = logging.getLogger(__name__)
SPLITS = ("heldout", "hard")
LOSS_TERMS = ("loss", "loss/direct", "loss/indirect", "loss/em", "loss/ce")


def _ci(m: dict | None) -> str:
    return "" if not m else f"{100 * m['mean']:.1f} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def _diff(m: dict | None) -> str:
    return "" if not m else f"{100 * m['mean']:+.1f} [{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}]"


def table(config, results: dict, summary: dict, lrs: dict) -> str:
    """Markdown table: one row per model; accuracy means with 95 % bootstrap CIs over seeds × problems, and
    the paired held-out differences to the initial student and to GKD."""
    tb = config.testbed
    seeds = list(tb.seeds)
    shape = {"teacher": tb.teacher, "student": tb.student}
    lines = [
        "| model | size | lr | steps | held-out acc % | Δ vs initial | Δ vs GKD | hard acc % | clip % | time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("teacher (SFT)", "teacher", ["teacher"], "teacher", tb.teacher.sft_lr)]
    rows.append(("initial student (SFT)", "initial_student", [f"seed{s}/student" for s in seeds], "student",
                 tb.student.sft_lr))  # fmt: skip
    rows += [(f"student + {m}", m, [f"seed{s}/{m}" for s in seeds], "student", None) for m in tb.methods]
    for label, model, keys, who, lr in rows:
        entries = [results[k] for k in keys if k in results]
        if not entries or model not in summary:
            continue
        s = summary[model]
        lr = lr if lr is not None else lrs.get(entries[0].get("method", ""), float("nan"))
        clip = s.get("train", {}).get("clip_frac")
        clip = "" if clip is None else f"{100 * clip:.0f}"
        secs = statistics.mean(e["seconds"] for e in entries)
        lines.append(
            f"| {label} | {shape[who].layers} × {shape[who].hidden} | {lr:g} | {entries[0]['steps']} | "
            f"{_ci(s.get('heldout'))} | {_diff(s.get('vs_initial'))} | {_diff(s.get('vs_gkd'))} | "
            f"{_ci(s.get('hard'))} | {clip} | {secs:.0f} s |"
        )
    return "\n".join(lines)


def sweep_table(sweep: dict | None) -> str:
    if not sweep:
        return ""
    lrs = list(next(iter(sweep.values())))
    lines = ["| method | " + " | ".join(f"lr {k}" for k in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    lines += [f"| {m} | " + " | ".join(f"{100 * row[k]:.1f}" for k in lrs) + " |" for m, row in sweep.items()]
    return "lr sweep, validation accuracy % (sweep seed):\n\n" + "\n".join(lines)


def verdict_text(summary: dict, n_seeds: int) -> str:
    v = summary.get("verdict")
    if not v:
        return ""
    checks = "; ".join(f"{k}: {'yes' if ok else 'no'}" for k, ok in v["checks"].items())
    caveat = (
        " One seed: its CIs cover problems only, and one initial student can favour any method; the claim "
        "is tested by `configs/testbed.py:study` (5 paired seeds, benchmarks/RESULTS.md)."
        if n_seeds == 1
        else ""
    )
    return f"**Verdict of this run: {v['verdict']}** ({checks}).{caveat}"


def machine() -> dict:
    """What the accuracies depend on (they differ between CPUs and XLA builds)."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__,
            "backend": jax.default_backend(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version()}  # fmt: skip


def read_metrics(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(path: str, config, results: dict) -> bool:
    """results.png: held-out accuracy over distillation steps, and each method's loss terms over steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no %s", path)
        return False
    tb = config.testbed
    methods = list(tb.methods)
    fig, axes = plt.subplots(1, 1 + len(methods), figsize=(4.2 * (1 + len(methods)), 3.6), squeeze=False)
    ax = axes[0, 0]
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for seed in tb.seeds:
        for m in methods:
            key = f"seed{seed}/{m}"
            if key not in results:
                continue
            rows = read_metrics(os.path.join(os.path.dirname(results[key]["export"]), "metrics.jsonl"))
            pts = [
                (r["step"], r["eval/validation_accuracy"]) for r in rows if "eval/validation_accuracy" in r
            ]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(
                    xs,
                    [100 * y for y in ys],
                    "o-",
                    ms=3,
                    color=colors[m],
                    label=m if seed == tb.seeds[0] else None,
                )
    ax.axhline(100 * results["teacher"]["heldout"]["accuracy"], ls="--", color="k", label="teacher")
    s0 = results.get(f"seed{tb.seeds[0]}/student")
    if s0:
        ax.axhline(100 * s0["heldout"]["accuracy"], ls=":", color="gray", label="initial student")
    ax.set(
        xlabel="distillation step",
        ylabel=f"validation accuracy % (greedy; first {tb.curve_size})",
        title="accuracy (lines: teacher, initial student)",
    )
    ax.legend(fontsize=7)
    for i, m in enumerate(methods, start=1):
        _plot_terms(axes[0, i], m, tb.seeds[0], results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_terms(ax, m: str, seed: int, results: dict) -> None:
    """Method `m`'s loss terms over its steps (seed `seed`)."""
    key = f"seed{seed}/{m}"
    rows = (
        read_metrics(os.path.join(os.path.dirname(results[key]["export"]), "metrics.jsonl"))
        if key in results
        else []
    )
    for term in LOSS_TERMS:
        pts = [(r["step"], r[term]) for r in rows if term in r]
        if pts and any(y != 0 for _, y in pts):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=term, lw=1)
    if ax.lines and all(min(line.get_ydata()) > 0 for line in ax.lines):
        ax.set_yscale("log")  # the terms differ by orders of magnitude
    ax.set(xlabel="step", title=f"{m}: loss terms (seed {seed})")
    ax.legend(fontsize=7)


def _strip(results: dict) -> dict:
    """results without the per-problem lists (they are in each stage's eval.json)."""
    return {k: {f: ({m: x for m, x in v.items() if m != "per_problem"} if isinstance(v, dict) else v)
                for f, v in r.items()} for k, r in results.items()}  # fmt: skip


def write(workdir: str, config, results: dict, *, wall_seconds: float, extra: dict) -> str:
    """Writes results.md / results.json / results.png; returns the Markdown text printed at the end."""
    tb = config.testbed
    summary = summary_lib.summarize(results, tb.seeds, tb.methods)
    md = table(config, results, summary, extra["lrs"])
    p, host = tb.problems, machine()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = (
        f"Greedy decoding, GSM8K strict scorer (`#### N`); {len(tb.seeds)} seed(s) × "
        f"{len(next(iter(results.values()))['heldout']['per_problem'])} held-out problems; 95 % CIs: percentile "
        f"bootstrap over seeds and problems, Δ paired (same seed's initial student, same problems). "
        f"held-out = {p.min_steps}-{p.max_steps}-step problems like training, hard = "
        f"{p.hard_min_steps}-{p.hard_max_steps} steps. Wall time of this invocation {wall_seconds:.0f} s "
        f"({stamp}, {host['cpu']}, {host['cpu_count']} CPUs, load {load:.1f}, jax {host['jax']}); accuracies "
        "differ between CPUs and XLA builds. Training stages "
        f"{sum(r['seconds'] for r in results.values()):.0f} s in all, each timed by the invocation that ran it."
    )
    text = "\n\n".join(
        x for x in (md, verdict_text(summary, len(tb.seeds)), sweep_table(extra.get("sweep")), footer) if x
    )
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("# Testbed results\n\n" + text + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(
            {"summary": summary, "results": _strip(results), **extra, "machine": host,
             "wall_seconds": wall_seconds, "config": config.to_dict()},
            f, indent=1, default=str,
        )  # fmt: skip
    plot(os.path.join(workdir, "results.png"), config, results)
    return text
