"""One testbed stage: a trainer run in its own folder, resumable and skipped when done, and its evaluation.

Every stage is a run of the trainer (`tsdkd_jax.train.build` + `train_and_evaluate`) in its own folder under the workdir, so it
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
from tsdkd_jax.eval.metrics import read_json, write_json
from tsdkd_jax.parallel import distributed
from tsdkd_jax.testbed import diagnostics
from tsdkd_jax.train import methods, variants

SCORER = "gsm8k_strict"  # the answer must follow "#### "


def say(msg: str) -> None:
    """Progress on stdout (the trainer logs to stderr)."""
    print(msg, flush=True)


def _stage_config(config, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.base.to_dict())  # an unlocked copy of the shared trainer settings
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}  # keyword-friendly keys
    return variants.apply(c, dotted, "testbed stage")


def stage_config(config, **overrides) -> ml_collections.ConfigDict:
    """The shared trainer settings (config.base) with `section__field=value` overrides."""
    return _stage_config(config, **overrides)


def stage_fields(tb, name: str) -> dict:
    """The trainer fields a distillation stage sets: its method plus any loss switches (tb.stages)."""
    stages = tb.get("stages") or {}
    return dict(stages[name]) if name in stages else {"method": name}


def lr_of(tb, lrs: dict, name: str) -> float:
    """A stage's distillation lr: its method's (ablations of TSD-KD use TSD-KD's)."""
    method = stage_fields(tb, name)["method"]
    if method not in lrs:
        raise ValueError(f"testbed.lr has no learning rate for method {method!r} (stage {name!r})")
    return float(lrs[method])


def _fingerprint(config) -> dict:
    """The settings that make a stage's result (paths left out: a workdir may be moved or copied)."""
    keys = ("method", "seed", "total_steps", "optim", "loss", "sampling")
    fp = {**{k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys},
          "batch_size": config.data.batch_size}  # fmt: skip
    if methods.of(config).teacher_mix is None:  # only MiniLLM reads loss.minillm: older workdirs still match
        fp["loss"].pop("minillm", None)
    return fp


def train_stage(name: str, config, workdir: str, make_hook=None) -> dict:
    """Runs (or resumes, or skips) one trainer run; returns {"export", "steps", "seconds"}."""
    info = read_json(os.path.join(workdir, "stage.json"))
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
    run = train.build(config, workdir)
    hook = make_hook(run) if make_hook else None
    # answers/* in metrics.jsonl of sampled steps
    train.train_and_evaluate(run, hook=hook, response_metrics=diagnostics.distinct_answers)
    seconds = time.perf_counter() - t0  # this invocation only when the stage was resumed
    info = {"export": export, "steps": config.total_steps, "seconds": seconds, "method": config.method,
            "config": _fingerprint(config)}  # fmt: skip
    write_json(os.path.join(workdir, "stage.json"), info)
    if os.path.exists(os.path.join(workdir, "eval.json")):  # an evaluation of an earlier model
        os.remove(os.path.join(workdir, "eval.json"))
    say(f"  {name}: finished in {seconds:.0f} s")
    return info


def evaluate_model(model, rows, tokenizer, tb, *, eos_ids, pad_id, jsonl_path=None) -> tuple[dict, list]:
    """Greedy accuracy on `rows`; returns (metrics, per-problem 0/1 list in row order)."""
    metrics, scored = eval_lib.evaluate(
        model, rows, tokenizer, scorer=SCORER, batch_size=tb.eval_batch,
        max_new_tokens=tb.eval_max_new_tokens, eos_token_ids=eos_ids, pad_token_id=pad_id,
        jsonl_path=jsonl_path,
    )  # fmt: skip
    return metrics, [int(r["correct"]) for r in scored]


def evaluate_stage(name: str, stage: dict, splits: dict, tokenizer, tb) -> dict:
    """Greedy accuracy of the stage's exported model on each split, cached per split in <stage>/eval.json
    (with the per-problem results the paired statistics need)."""
    folder = os.path.dirname(stage["export"])
    path = os.path.join(folder, "eval.json")
    cached = read_json(path) or {}
    missing = [
        s for s in splits if s not in cached or len(cached[s].get("per_problem", ())) != len(splits[s])
    ]
    if missing:
        model_dir = stage["export"]
        model = models.from_pretrained(model_dir)
        eos = data.eos_token_ids(model_dir, tokenizer)
        for split in missing:
            jsonl = os.path.join(folder, f"eval_{split}.jsonl")
            metrics, per_problem = evaluate_model(
                model,
                splits[split],
                tokenizer,
                tb,
                eos_ids=eos,
                pad_id=tokenizer.pad_token_id,
                jsonl_path=jsonl,
            )
            cached[split] = {**metrics, "per_problem": per_problem}
        write_json(path, cached)
    shown = {s: cached[s] for s in splits}
    say(f"  {name}: " + ", ".join(
        f"{s} {100 * m['accuracy']:.1f}% ({int(m['correct'])}/{int(m['n'])})" for s, m in shown.items()
    ))  # fmt: skip
    return {**stage, **shown}


def curve_hook(name: str, rows, tokenizer, tb, total_steps: int, every: int, split: str = "validation"):
    """A trainer hook: greedy accuracy on `rows` every `every` steps (and at 0 and the end), logged as
    eval/<split>_accuracy."""
    t0 = time.perf_counter()

    def make(run):
        def hook(step, params):
            if step % every and step != total_steps:
                return None
            model = nnx.merge(run.graphdef, jax.device_get(params))
            m, _ = evaluate_model(model, rows, tokenizer, tb, eos_ids=run.eos_ids, pad_id=run.pad_id)
            say(
                f"    [{name}] step {step:4d}/{total_steps}  {split} acc {100 * m['accuracy']:5.1f}%  "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            return {f"eval/{split}_accuracy": m["accuracy"]}

        return hook

    return make
