"""Scoring a model on named benchmarks: where each one's data comes from, a seeded subset, one scoring call.

Shared by `python -m tsdkd_jax.eval` (cli.py) and benchmark accuracy during training (during_training.py).
Data: a local file given by name (`name=path`), else `<data_dir>/<name>.{jsonl,json,parquet}` (or a folder
`<data_dir>/<name>/`), else the hub dataset of the benchmark table (benchmarks.py; needs the network).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tsdkd_jax.eval import runner
from tsdkd_jax.eval.benchmarks import BENCHMARKS, get_benchmark, load_examples

ALIASES = {"math500": "math", "math_500": "math", "gsmplus": "gsm_plus", "mmlu_pro": "mmlu_pro_math"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def canonical(name: str, field: str = "--benchmarks") -> str:
    """The benchmark table's name for `name` (aliases such as math500 accepted); unknown names raise."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        known = sorted(BENCHMARKS) + sorted(ALIASES)
        raise ValueError(f"{field}: unknown benchmark {name!r}; known: {', '.join(known)}")
    return name


def parse_names(text: str, field: str = "--benchmarks") -> list[str]:
    """Comma-separated names ("all" = the ten) → canonical names, duplicates dropped, order kept."""
    names = [n for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{field}: no benchmark named (give e.g. gsm8k,math500,mbpp or all)")
    if [n.strip() for n in names] == ["all"]:
        return list(BENCHMARKS)
    return list(dict.fromkeys(canonical(n, field) for n in names))


def parse_files(text: str, field: str = "--benchmark_files") -> dict[str, str]:
    """ "name=path,name=path" → {canonical name: path}; each path must exist."""
    out = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"{field}: expected name=path, got {item!r}")
        path = os.path.expanduser(path.strip())
        if not os.path.exists(path):
            raise FileNotFoundError(f"{field}: {name.strip()}={path}: no such file or folder")
        out[canonical(name, field)] = path
    return out


def in_data_dir(data_dir: str, name: str, field: str = "--data_dir") -> str:
    """<data_dir>/<name>.jsonl (.json, .parquet) or the folder <data_dir>/<name>; raises when none exists."""
    folder = os.path.expanduser(data_dir)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{field}={data_dir}: no such folder")
    candidates = [os.path.join(folder, name + s) for s in LOCAL_SUFFIXES] + [os.path.join(folder, name)]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{field}={data_dir}: no {name}.jsonl, {name}.json, {name}.parquet or {name}/ for benchmark {name}"
    )


def sources(names: Sequence[str], *, data_dir: str = "", files: Mapping[str, str] | None = None,
            field: str = "--data_dir", files_field: str = "--benchmark_files") -> dict[str, str | None]:  # fmt: skip
    """{name: local path, or None for the hub dataset}. With a data_dir, every native benchmark not given a
    file must be in it (offline runs fail at the start, naming the missing file, not half way through). A file
    for a benchmark that is not listed is an error (it would be silently unused)."""
    files = dict(files or {})
    if unlisted := sorted(set(files) - set(names)):
        raise ValueError(f"{files_field}: files given for {', '.join(unlisted)}, which are not among the "
                         f"benchmarks to score ({', '.join(names)})")  # fmt: skip
    out: dict[str, str | None] = {}
    for name in names:
        native = get_benchmark(name).to_example is not None
        if name in files:
            if not native:
                raise ValueError(f"{name} is scored by lm-eval (task {get_benchmark(name).lm_eval_task!r}), "
                                 "which reads its own data: a local file cannot replace it")  # fmt: skip
            out[name] = files[name]
        elif data_dir and native:
            out[name] = in_data_dir(data_dir, name, field)
        else:
            out[name] = None
    return out


def subset(examples: list[dict], size: int, seed: int) -> list[dict]:
    """`size` examples drawn without replacement by `seed` (kept in file order); all of them when size is 0
    or at least their number. The same seed gives the same subset every evaluation of a run."""
    if not size or size >= len(examples):
        return list(examples)
    picked = np.sort(np.random.default_rng(seed).choice(len(examples), size=size, replace=False))
    return [examples[int(i)] for i in picked]


def load(name: str, path: str | None, *, size: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """A native benchmark's examples (from `path`, else the hub), subset to `size`."""
    examples = load_examples(name, path=path)
    if not examples:
        raise ValueError(f"{name}: no examples in {path or get_benchmark(name).hf_path}")
    return subset(examples, size, seed)


def score(model, tokenizer, name: str, examples: Sequence[Mapping[str, Any]], *, eos_token_ids,
          pad_token_id: int, batch_size: int = 8, max_new_tokens: int = 0, jsonl_path: str | None = None,
          mesh=None) -> dict[str, float]:  # fmt: skip
    """{accuracy, ci95_low, ci95_high, n, correct} of `model` on a native benchmark's examples (greedy).

    Generation benchmarks use the benchmark's scorer and token budget (`max_new_tokens` > 0 overrides it);
    log-likelihood ones (MMLU-STEM, SciQ) pick the option with the highest log-probability.
    """
    b = get_benchmark(name)
    if b.scorer == "loglikelihood":
        metrics, _ = runner.evaluate_choices(
            model,
            examples,
            tokenizer,
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            jsonl_path=jsonl_path,
        )
        return metrics
    metrics, _ = runner.evaluate(
        model, examples, tokenizer, scorer=b.scorer, batch_size=batch_size,
        max_new_tokens=max_new_tokens or b.max_new_tokens, eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id, jsonl_path=jsonl_path, mesh=mesh,
    )  # fmt: skip
    return metrics
