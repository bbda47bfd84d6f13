"""The testbed's results: a Markdown table (printed and written to results.md), results.json, results.png."""

from __future__ import annotations

import json
import logging
import os
import statistics
import time

log = logging.getLogger(__name__)
SPLITS = ("heldout", "hard")
LOSS_TERMS = ("loss", "loss/direct", "loss/indirect", "loss/em", "loss/ce")


def _pct(m: dict) -> str:
    return f"{100 * m['accuracy']:.1f} [{100 * m['ci95_low']:.1f}, {100 * m['ci95_high']:.1f}]"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table(config, results: dict) -> str:
    """Markdown table: one row per model; with several seeds, mean ± std of accuracy over seeds."""
    tb = config.testbed
    seeds = list(tb.seeds)
    shape = {"teacher": tb.teacher, "student": tb.student}
    head = "| model | size | steps | held-out acc % | hard acc % | stage time |"
    if len(seeds) > 1:
        head = head.replace("acc %", f"acc % (mean ± std, {len(seeds)} seeds)")
    else:
        head = head.replace("acc %", "acc % [95 % CI]")
    lines = [head, "|---|---|---:|---:|---:|---:|"]
    rows = [("teacher (SFT)", ["teacher"], "teacher")]
    rows.append(("initial student (brief SFT)", [f"seed{s}/student" for s in seeds], "student"))
    rows += [(f"student + {m}", [f"seed{s}/{m}" for s in seeds], "student") for m in tb.methods]
    for label, keys, who in rows:
        entries = [results[k] for k in keys if k in results]
        if not entries:
            continue
        if len(entries) == 1:
            accs = [_pct(entries[0][s]) for s in SPLITS]
        else:
            accs = [_mean_std([e[s]["accuracy"] for e in entries]) for s in SPLITS]
        size = f"{shape[who].layers} × {shape[who].hidden}"
        secs = statistics.mean(e["seconds"] for e in entries)
        lines.append(f"| {label} | {size} | {entries[0]['steps']} | {accs[0]} | {accs[1]} | {secs:.0f} s |")
    return "\n".join(lines)


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
            pts = [(r["step"], r["eval/heldout_accuracy"]) for r in rows if "eval/heldout_accuracy" in r]
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
        ylabel=f"held-out accuracy % (greedy; first {tb.curve_size})",
        title="accuracy (lines: teacher, initial student)",
    )
    ax.legend(fontsize=7)
    for i, m in enumerate(methods, start=1):
        ax = axes[0, i]
        key = f"seed{tb.seeds[0]}/{m}"
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
        ax.set(xlabel="step", title=f"{m}: loss terms (seed {tb.seeds[0]})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(workdir: str, config, results: dict, *, wall_seconds: float) -> str:
    """Writes results.md / results.json / results.png; returns the Markdown table."""
    md, p = table(config, results), config.testbed.problems
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = (
        f"Greedy decoding, GSM8K strict scorer (`#### N`); held-out = {p.min_steps}-{p.max_steps}-step "
        f"problems like training, hard = {p.hard_min_steps}-{p.hard_max_steps} steps. "
        f"Wall time of this invocation {wall_seconds:.0f} s ({stamp}, {os.cpu_count()} CPUs, load {load:.1f}); "
        f"training stages {sum(r['seconds'] for r in results.values()):.0f} s in all, each timed by the "
        "invocation that ran it (a rerun skips finished stages)."
    )
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("# Testbed results\n\n" + md + "\n\n" + footer + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(
            {"results": results, "wall_seconds": wall_seconds, "config": config.to_dict()},
            f,
            indent=1,
            default=str,
        )
    plot(os.path.join(workdir, "results.png"), config, results)
    return md + "\n\n" + footer
