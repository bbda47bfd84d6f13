"""The testbed: assets → teacher SFT → student SFT → (lr sweep) → each distillation stage per seed → report.

The lr sweep (`testbed.sweep.lrs`, the `:study` variant) trains every compared method at every lr of one
grid from the sweep seed's initial student and keeps, per method, the lr with the best accuracy on the
validation split; the test splits (held-out, hard) are scored only for the chosen runs. Without a sweep the
lrs come from `testbed.lr` (the values the study selected). Ablations of TSD-KD use TSD-KD's lr.
"""

from __future__ import annotations

import os
import time

from tsdkd_jax import data
from tsdkd_jax.testbed import assets, diagnostics, report
from tsdkd_jax.testbed.stages import (
    curve_hook,
    evaluate_stage,
    lr_of,
    say,
    stage_config,
    stage_fields,
    train_stage,
)

TEST_SPLITS = ("heldout", "hard")


def _sft(config, name, shape, root, common, seed, init_seed, curve, tokenizer) -> dict:
    """A model trained from a fresh init by SFT on the correct solutions (teacher or initial student)."""
    tb = config.testbed
    init = assets.fresh_model(root, f"{name}_init", shape, common["student__tokenizer"], seed=init_seed)
    cfg = stage_config(
        config, **common, student__path=init, total_steps=shape.sft_steps, optim__lr=shape.sft_lr,
        data__batch_size=tb.sft_batch, seed=seed, data__seed=seed,
    )  # fmt: skip
    hook = curve_hook(name, curve, tokenizer, tb, cfg.total_steps, shape.eval_every)
    return train_stage(name, cfg, os.path.join(root, f"{name}_sft" if name == "student" else name), hook)


class _Context:
    """What every distillation stage of a run shares."""

    def __init__(self, config, paths, tok_dir, tokenizer, splits, teacher_dir):
        self.config, self.tb, self.paths, self.tokenizer = config, config.testbed, paths, tokenizer
        self.splits, self.teacher_dir = splits, teacher_dir
        self.toks = {"student__tokenizer": tok_dir, "teacher__tokenizer": tok_dir}
        self.curve = splits["validation"][: self.tb.curve_size]

    def distill(self, name: str, lr: float, seed: int, student_dir: str, folder: str, eval_splits) -> dict:
        tb = self.tb
        cfg = stage_config(
            self.config, **self.toks, **stage_fields(tb, name), student__path=student_dir,
            teacher__path=self.teacher_dir, data__path=self.paths["train"], total_steps=tb.distill_steps,
            seed=seed, data__seed=seed, optim__lr=lr,
        )  # fmt: skip
        hook = curve_hook(name, self.curve, self.tokenizer, tb, tb.distill_steps, tb.eval_every)
        stage = train_stage(name, cfg, folder, hook)
        return evaluate_stage(name, stage, {s: self.splits[s] for s in eval_splits}, self.tokenizer, tb)


def _sweep_dir(workdir: str, name: str, lr: float) -> str:
    return os.path.join(workdir, "sweep", name, f"lr{lr:g}")


def sweep(ctx: _Context, workdir: str, student_dir: str) -> tuple[dict, dict]:
    """Every swept method at every grid lr on the sweep seed; returns ({method: lr}, {method: {lr: acc}})."""
    tb = ctx.tb
    table, chosen = {}, {}
    for name in tb.sweep.methods:
        table[name] = {}
        for lr in tb.sweep.lrs:
            folder = _sweep_dir(workdir, name, lr)
            result = ctx.distill(name, lr, tb.sweep.seed, student_dir, folder, ["validation"])
            table[name][f"{lr:g}"] = result["validation"]["accuracy"]
        best = max(table[name].values())  # ties: the smallest such lr (grid order)
        chosen[stage_fields(tb, name)["method"]] = next(float(k) for k, v in table[name].items() if v == best)
    say("  lr sweep (validation accuracy %): " + "; ".join(
        f"{m}: " + ", ".join(f"{k} → {100 * v:.1f}" for k, v in row.items()) for m, row in table.items()
    ))  # fmt: skip
    say("  chosen lrs: " + ", ".join(f"{m} {lr:g}" for m, lr in chosen.items()))
    return chosen, table


def _assets(config, workdir):
    tb = config.testbed
    root = os.path.join(workdir, "assets")
    paths = assets.problems(root, tb)
    tok_dir = assets.tokenizer(root, tb, paths["train"])
    tokenizer = data.load_tokenizer(tok_dir)
    splits = {s: assets.read_rows(paths[s]) for s in ("validation", *TEST_SPLITS)}
    say(f"  {len(assets.read_rows(paths['train']))} train / " + " / ".join(
        f"{len(rows)} {s}" for s, rows in splits.items()) + f" problems, {len(tokenizer)}-token tokenizer")  # fmt: skip
    return root, paths, tok_dir, tokenizer, splits


def run(config, workdir: str) -> dict:
    """The whole testbed; prints the table and writes <workdir>/results.{md,json,png}. Returns the results."""
    tb = config.testbed
    workdir = os.path.abspath(os.path.expanduser(workdir))
    t_start = time.perf_counter()
    say(f"[testbed] workdir {workdir}; seeds {list(tb.seeds)}; stages {list(tb.methods)}")

    say("[1/5] problems and tokenizer")
    root, paths, tok_dir, tokenizer, splits = _assets(config, workdir)
    all_splits = ("validation", *TEST_SPLITS)
    # The tokenizer is named explicitly: a folder whose config.json says qwen2 loads as Qwen2Tokenizer, whose
    # digit-splitting pre-tokenizer does not match the BPE trained here.
    # SFT reads the training problems plus the recovery rows: a wrong intermediate written as a loss-masked
    # prefix, the solution continued from the true value (assets.problems "sft").
    common = {"data__path": paths["sft"], "data__response_prefix_field": "prefix",
              "data__response_field": "continuation", "teacher__path": "", "method": "sft",
              "student__tokenizer": tok_dir, "teacher__tokenizer": tok_dir}  # fmt: skip
    curve = splits["validation"][: tb.curve_size]

    say(f"[2/5] teacher: {tb.teacher.layers} layers × {tb.teacher.hidden}, SFT on correct solutions")
    teacher = _sft(
        config, "teacher", tb.teacher, root, common, tb.data_seed, tb.data_seed + 1, curve, tokenizer
    )
    results = {"teacher": evaluate_stage("teacher", teacher, splits, tokenizer, tb)}
    ctx = _Context(config, paths, tok_dir, tokenizer, splits, teacher["export"])

    lrs, sweep_table = dict(tb.lr), None
    if tb.sweep.lrs and tb.sweep.seed != tb.seeds[0]:
        raise ValueError(
            f"testbed.sweep.seed={tb.sweep.seed} must be the first of testbed.seeds {list(tb.seeds)}"
        )
    for seed in tb.seeds:
        sdir = os.path.join(workdir, f"seed{seed}")
        say(f"[3/5] seed {seed}: student {tb.student.layers} layers × {tb.student.hidden}, SFT")
        student = _sft(config, "student", tb.student, sdir, common, seed, 1000 + seed, curve, tokenizer)
        results[f"seed{seed}/student"] = evaluate_stage("initial student", student, splits, tokenizer, tb)
        if tb.sweep.lrs and seed == tb.sweep.seed:
            say(f"[3b/5] lr sweep on seed {seed}: {list(tb.sweep.methods)} × lr {list(tb.sweep.lrs)}")
            chosen, sweep_table = sweep(ctx, workdir, student["export"])
            lrs.update(chosen)
        say(f"[4/5] seed {seed}: distil the initial student ({', '.join(tb.methods)})")
        for name in tb.methods:
            lr = lr_of(tb, lrs, name)
            reuse = sweep_table is not None and seed == tb.sweep.seed and name in tb.sweep.methods
            folder = _sweep_dir(workdir, name, lr) if reuse else os.path.join(sdir, name)
            results[f"seed{seed}/{name}"] = ctx.distill(name, lr, seed, student["export"], folder, all_splits)
            if name == "tsdkd":  # the per-token view of the flagship stage
                diagnostics.write_selections(folder, paths["heldout"])

    say("[5/5] results")
    wall = time.perf_counter() - t_start
    extra = {"lrs": {m: float(v) for m, v in lrs.items()}, "sweep": sweep_table}
    table = report.write(workdir, config, results, wall_seconds=wall, extra=extra)
    say(table)
    say(f"[testbed] done in {wall:.0f} s; results in {os.path.join(workdir, 'results.md')}")
    return results
