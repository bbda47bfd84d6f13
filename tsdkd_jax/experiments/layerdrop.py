"""Layer-drop distillation on a real pretrained model: teacher Gemma-3-270M → a student of some of its blocks.

Stages (under the workdir; a finished stage is skipped on a rerun, an interrupted one resumes):
  assets     the teacher and student HF folders (weights.gemma3_270m, cached across workdirs) and the
             prompts: the testbed's arithmetic word problems (seeded, offline) as {"prompt", "response",
             "gold"} rows, written to <workdir>/data/{train,heldout}.jsonl
  <method>   one trainer run per method (config.layerdrop.methods) from the same initial student, with
             held-out KL(teacher‖student) at its first and last step (eval/kl_teacher_student)
  evaluate   greedy answer accuracy (the last number of the answer, GSM8K "flexible") of the teacher, the
             initial student and every distilled student on the held-out problems
Writes <workdir>/results.json and results.md (the table) and prints the table.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections

from tsdkd_jax import data, models, train
from tsdkd_jax import eval as eval_lib
from tsdkd_jax.parallel import distributed

SCORER = "gsm8k_flexible"  # a base model answers in its own words: score the last number it writes
STOP = ("\n\n", "Question:")


def say(msg: str) -> None:
    print(msg, flush=True)


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_assets(ld, workdir: str) -> dict:
    """The two model folders and the prompt files; returns their paths and the held-out rows."""
    from tsdkd_jax.eval import testbed_problems
    from tsdkd_jax.weights import gemma3_270m

    folders = gemma3_270m.hf_folders(ld.cache_dir, keep=tuple(ld.keep))
    splits = testbed_problems.make_splits(ld.data_seed, ld.n_train, ld.n_heldout, 1)
    paths = {}
    for split in ("train", "heldout"):
        paths[split] = os.path.join(workdir, "data", f"{split}.jsonl")
        os.makedirs(os.path.dirname(paths[split]), exist_ok=True)
        with open(paths[split], "w") as f:  # deterministic: rewriting gives the same file
            f.writelines(
                json.dumps({k: r[k] for k in ("prompt", "response", "gold")}) + "\n" for r in splits[split]
            )
    return {**folders, **paths, "heldout_rows": splits["heldout"]}


def stage_config(config, method: str, assets: dict) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.base.to_dict())
    c.method = method
    c.student.path = assets["student"]
    c.teacher.path = assets["teacher"]
    c.data.path = assets["train"]
    return c


def train_stage(config, workdir: str) -> dict:
    """Runs (or resumes, or skips) one trainer run; returns {"export", "seconds", "kl_before", "kl_after"}."""
    info = _read_json(os.path.join(workdir, "stage.json"))
    if info and distributed.is_done(workdir):
        say(f"  {config.method}: done earlier ({info['seconds']:.0f} s), skipped")
        return info
    say(f"  {config.method}: {config.total_steps} steps of {config.data.batch_size} prompts → {workdir}")
    t0 = time.perf_counter()
    train.run(config, workdir)
    kls = [r["eval/kl_teacher_student"] for r in _metrics(workdir) if "eval/kl_teacher_student" in r]
    info = {
        "export": os.path.join(workdir, "export"),
        "seconds": time.perf_counter() - t0,
        "kl_before": kls[0] if kls else None,
        "kl_after": kls[-1] if kls else None,
    }
    _write_json(os.path.join(workdir, "stage.json"), info)
    say(f"  {config.method}: finished in {info['seconds']:.0f} s")
    return info


def _metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def accuracy(model_dir: str, rows, ld, tokenizer) -> dict:
    """Greedy held-out accuracy of the model in `model_dir` (cached beside it... by the caller)."""
    model = models.from_pretrained(model_dir)
    metrics, _ = eval_lib.evaluate(
        model, rows, tokenizer, scorer=SCORER, batch_size=ld.eval_batch, max_new_tokens=ld.eval_max_new_tokens,
        eos_token_ids=data.eos_token_ids(model_dir, tokenizer), pad_token_id=tokenizer.pad_token_id, stop=STOP,
    )  # fmt: skip
    return metrics


def run(config, workdir: str) -> dict:
    """All stages; returns the results dict also written to <workdir>/results.json."""
    ld = config.layerdrop
    t0 = time.perf_counter()
    say(f"layer-drop distillation: teacher Gemma-3-270M, student blocks {list(ld.keep)} → {workdir}")
    assets = build_assets(ld, workdir)
    rows = assets["heldout_rows"][: ld.eval_problems]
    tokenizer = data.load_tokenizer(assets["teacher"])
    cached = _read_json(os.path.join(workdir, "accuracy.json")) or {}
    table = {}
    for name in ("teacher", "initial student"):
        key = "teacher" if name == "teacher" else "student"
        if name not in cached:
            cached[name] = accuracy(assets[key], rows, ld, tokenizer)
            _write_json(os.path.join(workdir, "accuracy.json"), cached)
        table[name] = {"accuracy": cached[name]}
    for method in ld.methods:
        stage = train_stage(stage_config(config, method, assets), os.path.join(workdir, method))
        table.setdefault("initial student", {}).setdefault("kl", stage["kl_before"])
        if method not in cached:
            cached[method] = accuracy(stage["export"], rows, ld, tokenizer)
            _write_json(os.path.join(workdir, "accuracy.json"), cached)
        table[method] = {"accuracy": cached[method], "kl": stage["kl_after"], "seconds": stage["seconds"]}
    results = {"table": table, "keep": list(ld.keep), "seconds": time.perf_counter() - t0}
    _write_json(os.path.join(workdir, "results.json"), results)
    md = markdown(table, len(rows))
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(md)
    say(md)
    return results


def markdown(table: dict, n: int) -> str:
    lines = [
        f"| model | held-out KL(teacher‖student) per token | accuracy on {n} held-out problems |",
        "| --- | --- | --- |",
    ]
    for name, row in table.items():
        kl = "—" if row.get("kl") is None else f"{row['kl']:.3f}"
        m = row["accuracy"]
        acc = f"{100 * m['accuracy']:.1f} % ({int(m['correct'])}/{int(m['n'])})"
        lines.append(f"| {name} | {kl} | {acc} |")
    return "\n".join(lines) + "\n"
