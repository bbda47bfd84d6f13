"""Testbed v2 pilot (issue 11): SFT curves to plateau, fork entropies, and a distillation lr pilot with paired
bootstrap CIs against the initial student. Built on the testbed pipeline's stage functions.

    PYTHONPATH=. python benchmarks/testbed_pilot.py --workdir=/tmp/tbp --phase=sft \
        --config=configs/testbed.py [--config.testbed.teacher.sft_steps=...]
    PYTHONPATH=. python benchmarks/testbed_pilot.py --workdir=/tmp/tbp --phase=distill --methods=gkd,tsdkd \
        --lrs=3e-5,1e-4,3e-4 --config=configs/testbed.py

Stages are cached in the workdir (a rerun skips finished ones). Prints one JSON line per result.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from tsdkd_jax import data
from tsdkd_jax.testbed import assets, stages

_CONFIG = config_flags.DEFINE_config_file("config", "configs/testbed.py")
flags.DEFINE_string("workdir", "/tmp/tbp", "")
flags.DEFINE_string("phase", "sft", "sft | forks | distill")
flags.DEFINE_string("methods", "gkd,tsdkd", "")
flags.DEFINE_string("lrs", "3e-5,1e-4,3e-4", "")
flags.DEFINE_string("split", "heldout", "evaluation split for the distillation pilot")
flags.DEFINE_bool("recovery", True, "SFT on sft.jsonl (train + masked recovery rows)")
FLAGS = flags.FLAGS


def correct_vector(folder: str, split: str) -> np.ndarray:
    with open(os.path.join(folder, f"eval_{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return np.array([float(r["correct"]) for r in rows])


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mean of a - b with a 95 % percentile paired bootstrap CI over problems."""
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    return {"mean": float(d.mean()), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5))}  # fmt: skip


def sft(config, workdir, paths, tok_dir, tokenizer, curve_rows, evals, which, seed):
    tb = config.testbed
    shape = tb[which]
    root = os.path.join(workdir, "assets")
    init = assets.fresh_model(
        root, f"{which}_init", shape, tok_dir, seed=(1 if which == "teacher" else 1000) + seed
    )
    fields = {"data__path": paths["sft"], "data__response_prefix_field": "prefix",
              "data__response_field": "continuation"} if FLAGS.recovery else {"data__path": paths["train"]}  # fmt: skip
    cfg = stages._stage_config(
        config, **fields, teacher__path="", method="sft", student__tokenizer=tok_dir,
        teacher__tokenizer=tok_dir, student__path=init, total_steps=shape.sft_steps, optim__lr=shape.sft_lr,
        data__batch_size=tb.sft_batch, seed=seed, data__seed=seed,
    )  # fmt: skip
    hook = stages.curve_hook(which, curve_rows, tokenizer, tb, cfg.total_steps, shape.eval_every)
    folder = which if which == "teacher" else f"student_{shape.sft_steps}"  # step counts side by side
    info = stages.train_stage(which, cfg, os.path.join(workdir, folder), hook)
    return stages.evaluate_stage(which, info, evals, tokenizer, tb)


def main(_):
    config = _CONFIG.value
    tb = config.testbed
    workdir = FLAGS.workdir
    t0 = time.perf_counter()
    root = os.path.join(workdir, "assets")
    paths = assets.problems(root, tb)
    tok_dir = assets.tokenizer(root, tb, paths["train"])
    tokenizer = data.load_tokenizer(tok_dir)
    evals = {s: assets.read_rows(paths[s]) for s in ("validation", "heldout")}
    curve_rows = evals["heldout"][: tb.curve_size]
    teacher = sft(config, workdir, paths, tok_dir, tokenizer, curve_rows, evals, "teacher", 0)
    student = sft(config, workdir, paths, tok_dir, tokenizer, curve_rows, evals, "student", 0)
    print(json.dumps({"phase": "sft", "teacher": teacher["heldout"]["accuracy"],
                      "student": student["heldout"]["accuracy"], "teacher_s": teacher["seconds"],
                      "student_s": student["seconds"]}), flush=True)  # fmt: skip
    if FLAGS.phase == "forks":
        from tsdkd_jax import models
        from tsdkd_jax.testbed import forks

        eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        for which, info in (("teacher", teacher), ("student", student)):
            model = models.from_pretrained(info["export"])
            h = forks.entropy_at_forks(model, tokenizer, evals["heldout"][:256], eot)
            print(json.dumps({"phase": "forks", "model": which, **h}), flush=True)
        return
    if FLAGS.phase != "distill":
        return
    base = correct_vector(os.path.dirname(student["export"]), FLAGS.split)
    for lr in [float(x) for x in FLAGS.lrs.split(",")]:
        for method in FLAGS.methods.split(","):
            name = f"{method}_lr{lr:g}_s{tb.student.sft_steps}"
            cfg = stages._stage_config(
                config, method=method, student__tokenizer=tok_dir, teacher__tokenizer=tok_dir,
                student__path=student["export"], teacher__path=teacher["export"], data__path=paths["train"],
                total_steps=tb.distill_steps, optim__lr=lr, seed=0, data__seed=0,
            )  # fmt: skip
            hook = stages.curve_hook(name, curve_rows, tokenizer, tb, tb.distill_steps, tb.eval_every)
            info = stages.train_stage(name, cfg, os.path.join(workdir, name), hook)
            info = stages.evaluate_stage(name, info, {FLAGS.split: evals[FLAGS.split]}, tokenizer, tb)
            acc = correct_vector(os.path.dirname(info["export"]), FLAGS.split)
            print(json.dumps({"method": method, "lr": lr, "split": FLAGS.split, "acc": float(acc.mean()),
                              "initial": float(base.mean()), "vs_initial": paired_ci(acc, base),
                              "seconds": info["seconds"]}), flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
