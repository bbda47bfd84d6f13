"""The testbed's stages: assets → teacher SFT → brief student SFT → each distillation method → evaluation.

Every stage is a run of the trainer (`tsdkd_jax.train.Trainer`) in its own folder under the workdir, so it
resumes from its checkpoint when interrupted and is skipped once its DONE marker and export exist; every
evaluation is cached as <stage>/eval.json. Stage wall times are recorded in <stage>/stage.json.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
from flax import nnx

from tsdkd_jax import data, models, train
from tsdkd_jax import eval as eval_lib
from tsdkd_jax.parallel import distributed
from tsdkd_jax.testbed import assets, diagnostics, report

SCORER = "gsm8k_strict"  # the answer must follow "#### "


def say(msg: str) -> None:
    """Progress on stdout (the trainer logs to stderr)."""
    print(msg, flush=True)


def _stage_config(config, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.base.to_dict())  # an unlocked copy of the shared trainer settings
    for key, value in overrides.items():
        section, _, field = key.rpartition("__")
        (c[section] if section else c)[field] = value
    return c


def stage_fields(tb, name: str) -> dict:
    """The trainer fields a distillation stage sets: its method, plus an ablation's switches (`:ablate`)."""
    ablations = tb.get("ablations") or {}
    return dict(ablations[name]) if name in ablations else {"method": name}


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def _fingerprint(config) -> dict:
    """The settings that make a stage's result (paths left out: a workdir may be moved or copied)."""
    keys = ("method", "seed", "total_steps", "optim", "loss", "sampling")
    return {**{k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys},
            "batch_size": config.data.batch_size}  # fmt: skip


def train_stage(name: str, config, workdir: str, make_hook=None) -> dict:
    """Runs (or resumes, or skips) one trainer run; returns {"export", "steps", "seconds"}."""
    info = _read_json(os.path.join(workdir, "stage.json"))
    export = os.path.join(workdir, "export")
    if info and distributed.is_done(workdir) and os.path.isdir(export):
        if info.get("config", _fingerprint(config)) != json.loads(json.dumps(_fingerprint(config))):
            raise ValueError(
                f"{workdir} holds a finished {name} stage of a different config; use another --workdir"
            )
        say(f"  {name}: done earlier ({info['steps']} steps, {info['seconds']:.0f} s), skipped")
        return info
    say(f"  {name}: {config.method}, {config.total_steps} steps, lr {config.optim.lr:g} → {workdir}")
    t0 = time.perf_counter()
    trainer = train.Trainer(config, workdir)
    trainer.response_metrics = diagnostics.distinct_answers  # answers/* in metrics.jsonl of sampled steps
    trainer.run(make_hook(trainer) if make_hook else None)
    seconds = time.perf_counter() - t0  # this invocation only when the stage was resumed
    info = {"export": export, "steps": config.total_steps, "seconds": seconds, "method": config.method,
            "config": _fingerprint(config)}  # fmt: skip
    _write_json(os.path.join(workdir, "stage.json"), info)
    if os.path.exists(os.path.join(workdir, "eval.json")):  # an evaluation of an earlier model
        os.remove(os.path.join(workdir, "eval.json"))
    say(f"  {name}: finished in {seconds:.0f} s")
    return info


def evaluate_model(model, rows, tokenizer, tb, *, eos_ids, pad_id, jsonl_path=None) -> dict:
    metrics, _ = eval_lib.evaluate(
        model, rows, tokenizer, scorer=SCORER, batch_size=tb.eval_batch,
        max_new_tokens=tb.eval_max_new_tokens, eos_token_ids=eos_ids, pad_token_id=pad_id,
        jsonl_path=jsonl_path,
    )  # fmt: skip
    return metrics


def evaluate_stage(name: str, stage: dict, splits: dict, tokenizer, tb) -> dict:
    """Greedy accuracy of the stage's exported model on every split (cached in <stage>/eval.json)."""
    folder = os.path.dirname(stage["export"])
    path = os.path.join(folder, "eval.json")
    cached = _read_json(path)
    if cached is None:
        model_dir = stage["export"]
        model = models.from_pretrained(model_dir)
        eos = data.eos_token_ids(model_dir, tokenizer)
        cached = {}
        for split, rows in splits.items():
            jsonl = os.path.join(folder, f"eval_{split}.jsonl")
            cached[split] = evaluate_model(
                model, rows, tokenizer, tb, eos_ids=eos, pad_id=tokenizer.pad_token_id, jsonl_path=jsonl
            )
        _write_json(path, cached)
    say(
        f"  {name}: "
        + ", ".join(
            f"{s} {100 * m['accuracy']:.1f}% ({int(m['correct'])}/{int(m['n'])})" for s, m in cached.items()
        )
    )
    return {**stage, **cached}


def curve_hook(name: str, rows, tokenizer, tb, total_steps: int, every: int):
    """A trainer hook: held-out greedy accuracy every `every` steps (and at 0 and the end)."""
    t0 = time.perf_counter()

    def make(trainer):
        def hook(step, params):
            if step % every and step != total_steps:
                return None
            model = nnx.merge(trainer.graphdef, jax.device_get(params))
            m = evaluate_model(model, rows, tokenizer, tb, eos_ids=trainer.eos_ids, pad_id=trainer.pad_id)
            say(
                f"    [{name}] step {step:4d}/{total_steps}  held-out acc {100 * m['accuracy']:5.1f}%  "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            return {"eval/heldout_accuracy": m["accuracy"]}

        return hook

    return make


def run(config, workdir: str) -> dict:
    """The whole testbed; prints the table and writes <workdir>/results.{md,json,png}. Returns the results."""
    tb = config.testbed
    workdir = os.path.abspath(os.path.expanduser(workdir))
    t_start = time.perf_counter()
    say(f"[testbed] workdir {workdir}; seeds {list(tb.seeds)}; methods {list(tb.methods)}")

    say("[1/5] problems and tokenizer")
    root = os.path.join(workdir, "assets")
    paths = assets.problems(root, tb)
    tok_dir = assets.tokenizer(root, tb, paths["train"])
    tokenizer = data.load_tokenizer(tok_dir)
    splits = {s: assets.read_rows(paths[s]) for s in ("heldout", "hard")}
    curve_rows = splits["heldout"][: tb.curve_size]
    say(f"  {tb.problems.n_train} train / {len(splits['heldout'])} held-out / {len(splits['hard'])} hard "
        f"problems, {len(tokenizer)}-token tokenizer")  # fmt: skip
    # The tokenizer is named explicitly: a folder whose config.json says qwen2 loads as Qwen2Tokenizer, whose
    # digit-splitting pre-tokenizer does not match the BPE trained here.
    toks = {"student__tokenizer": tok_dir, "teacher__tokenizer": tok_dir}
    common = {"data__path": paths["train"], "teacher__path": "", "method": "sft", **toks}

    say(f"[2/5] teacher: {tb.teacher.layers} layers × {tb.teacher.hidden}, SFT on correct solutions")
    init = assets.fresh_model(root, "teacher_init", tb.teacher, tok_dir, seed=tb.data_seed + 1)
    cfg = _stage_config(
        config, **common, student__path=init, total_steps=tb.teacher.sft_steps, optim__lr=tb.teacher.sft_lr,
        data__batch_size=tb.sft_batch, seed=tb.data_seed, data__seed=tb.data_seed,
    )  # fmt: skip
    hook = curve_hook("teacher", curve_rows, tokenizer, tb, cfg.total_steps, tb.teacher.eval_every)
    results = {"teacher": train_stage("teacher", cfg, os.path.join(workdir, "teacher"), hook)}
    results["teacher"] = evaluate_stage("teacher", results["teacher"], splits, tokenizer, tb)
    teacher_dir = results["teacher"]["export"]

    for seed in tb.seeds:
        sdir = os.path.join(workdir, f"seed{seed}")
        say(f"[3/5] seed {seed}: student {tb.student.layers} layers × {tb.student.hidden}, brief SFT")
        init = assets.fresh_model(sdir, "student_init", tb.student, tok_dir, seed=1000 + seed)
        cfg = _stage_config(
            config, **common, student__path=init, total_steps=tb.student.sft_steps,
            optim__lr=tb.student.sft_lr, data__batch_size=tb.sft_batch, seed=seed, data__seed=seed,
        )  # fmt: skip
        key = f"seed{seed}/student"
        hook = curve_hook("student", curve_rows, tokenizer, tb, cfg.total_steps, tb.student.eval_every)
        results[key] = train_stage("initial student", cfg, os.path.join(sdir, "student_sft"), hook)
        results[key] = evaluate_stage("initial student", results[key], splits, tokenizer, tb)
        student_dir = results[key]["export"]

        say(f"[4/5] seed {seed}: distil the initial student ({', '.join(tb.methods)})")
        for method in tb.methods:
            cfg = _stage_config(
                config, **toks, **stage_fields(tb, method), student__path=student_dir,
                teacher__path=teacher_dir, data__path=paths["train"], total_steps=tb.distill_steps,
                seed=seed, data__seed=seed,
            )  # fmt: skip
            hook = curve_hook(method, curve_rows, tokenizer, tb, tb.distill_steps, tb.eval_every)
            key = f"seed{seed}/{method}"
            results[key] = train_stage(method, cfg, os.path.join(sdir, method), hook)
            if method == "tsdkd":  # the per-token view of the flagship stage
                diagnostics.write_selections(os.path.join(sdir, method), paths["heldout"])
            results[key] = evaluate_stage(method, results[key], splits, tokenizer, tb)

    say("[5/5] results")
    wall = time.perf_counter() - t_start
    table = report.write(workdir, config, results, wall_seconds=wall)
    say(table)
    say(f"[testbed] done in {wall:.0f} s; results in {os.path.join(workdir, 'results.md')}")
    return results
