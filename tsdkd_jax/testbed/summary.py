"""results.json's `summary`: accuracies with bootstrap CIs, paired gains, training diagnostics, the verdict.

summary[model] = {"heldout": {"mean", "ci_low", "ci_high"}, "hard": {...}}   model: teacher,
    initial_student, or a distillation stage; a stage also has
    "vs_initial": paired held-out difference to the initial student of the same seed,
    "vs_gkd": paired held-out difference to GKD of the same seed (stages other than gkd),
    "train": {"clip_frac", "entropy_student", "entropy_teacher"} (the last logged row, mean over seeds)
summary["verdict"] = {"positive_control", "verdict", "checks": {...}}   when tsdkd and gkd both ran
"""

from __future__ import annotations

import json
import os

import numpy as np

from tsdkd_jax.testbed import stats

SPLITS = ("heldout", "hard")
TRAIN_KEYS = {
    "clip_frac": "clip_frac",
    "entropy_student": "entropy/student",
    "entropy_teacher": "entropy/teacher",
}


def _matrix(results: dict, keys: list[str], split: str) -> np.ndarray | None:
    rows = [results[k][split]["per_problem"] for k in keys if k in results and split in results[k]]
    return np.asarray(rows, dtype=np.float64) if len(rows) == len(keys) and rows else None


def _last_logged(results: dict, keys: list[str]) -> dict:
    """The TRAIN_KEYS values of each run's last metrics.jsonl row holding them, averaged over runs."""
    values: dict[str, list[float]] = {}
    for key in keys:
        path = os.path.join(os.path.dirname(results[key]["export"]), "metrics.jsonl")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for out, name in TRAIN_KEYS.items():
            logged = [r[name] for r in rows if name in r]
            if logged:
                values.setdefault(out, []).append(float(logged[-1]))
    return {k: float(np.mean(v)) for k, v in values.items()}


def summarize(results: dict, seeds, stages, *, n_resamples: int = stats.N_RESAMPLES) -> dict:
    """The summary above from the testbed's results (each evaluated split carrying "per_problem")."""
    ci = lambda x: stats.mean_ci(x, n_resamples=n_resamples)
    diff = lambda a, b: stats.paired_diff_ci(a, b, n_resamples=n_resamples)
    runs = {"teacher": ["teacher"], "initial_student": [f"seed{s}/student" for s in seeds]}
    runs.update({name: [f"seed{s}/{name}" for s in seeds] for name in stages})
    out: dict = {}
    for model, keys in runs.items():
        entry = {split: ci(m) for split in SPLITS if (m := _matrix(results, keys, split)) is not None}
        if not entry:
            continue
        if model not in ("teacher", "initial_student"):
            mine = _matrix(results, keys, "heldout")
            for ref, name in (("initial_student", "vs_initial"), ("gkd", "vs_gkd")):
                other = _matrix(results, runs[ref], "heldout") if ref in runs else None
                if model != ref and mine is not None and other is not None:
                    entry[name] = diff(mine, other)
            entry["train"] = _last_logged(results, keys)
        out[model] = entry
    if "tsdkd" in out and "gkd" in out:
        out["verdict"] = verdict(out)
    return out


def verdict(summary: dict) -> dict:
    """The issue's test of the paper's claim at this scale, each check stated."""
    gkd, full = summary["gkd"], summary["tsdkd"]
    checks = {"gkd_beats_initial (positive control)": gkd["vs_initial"]["ci_low"] > 0}
    checks["tsdkd_beats_gkd (paired CI above 0)"] = full["vs_gkd"]["ci_low"] > 0
    if "tsdkd_gate_only" in summary:
        order = [
            full["heldout"]["mean"],
            summary["tsdkd_gate_only"]["heldout"]["mean"],
            gkd["heldout"]["mean"],
        ]
        checks["full >= gate_only >= gkd (means)"] = order[0] >= order[1] >= order[2]
    train = full.get("train", {})
    if "entropy_student" in train and "entropy_teacher" in train:
        checks["student entropy not below teacher's (tsdkd, end)"] = (
            train["entropy_student"] >= train["entropy_teacher"]
        )
    claim = [v for k, v in checks.items() if not k.startswith("gkd_beats")]
    if not checks["gkd_beats_initial (positive control)"]:
        text = "no headroom: the positive control (GKD over the initial student) failed"
    elif all(claim):
        text = "reproduced"
    else:
        text = "not reproduced at this scale"
    return {
        "positive_control": checks["gkd_beats_initial (positive control)"],
        "verdict": text,
        "checks": checks,
    }
