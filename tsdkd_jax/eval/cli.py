"""python -m tsdkd_jax.eval --model=DIR --benchmarks=gsm8k,math500,mbpp,... --out=DIR

Scores one model folder (an HF folder, a run's <workdir>/export, or a workdir holding export/) on the listed
benchmarks (names of the benchmark table, math500 = MATH-500, or `all`), greedy. Writes, per benchmark,
<out>/<name>.json ({"benchmark", "metrics": {accuracy, ci95_low, ci95_high, n, ...}, "settings"}) and the
per-example rows <out>/<name>.jsonl (native benchmarks), then <out>/results.json (all of them) and prints a
table. Resumable per benchmark: a result file whose settings match is reused, so a rerun after a crash
continues with the benchmarks still missing (settings that differ stop the run; --overwrite rescores).

Data: --benchmark_files=name=path,... and --data_dir=DIR (<DIR>/<name>.jsonl, .json, .parquet or <name>/)
read local files with the hub dataset's fields (offline); other native benchmarks read the hub. BBH, MuSR and
IFEval run through lm-eval (the `eval` extra), which reads the hub itself.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from tsdkd_jax.eval import lm_eval_suite, suite
from tsdkd_jax.eval.benchmarks import get_benchmark
from tsdkd_jax.eval.metrics import read_json, write_json


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tsdkd_jax.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", required=True, help="HF model folder, a run's export/, or a run's workdir")
    p.add_argument("--benchmarks", required=True, help="comma-separated names, e.g. gsm8k,math500,mbpp; all")
    p.add_argument("--out", required=True, help="output folder (result files; reused on a rerun)")
    p.add_argument(
        "--data_dir", default="", help="folder of local benchmark files <name>.jsonl/.json/.parquet"
    )
    p.add_argument("--benchmark_files", default="", help="name=path,... local files (win over --data_dir)")
    p.add_argument("--limit", type=int, default=0, help="examples per benchmark: a seeded subset (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="picks the --limit subset")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=0, help="0 = each benchmark's own budget")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--tokenizer", default="", help="tokenizer folder (default: the model folder)")
    p.add_argument("--overwrite", action="store_true", help="rescore benchmarks whose settings changed")
    args = p.parse_args(argv)
    for field in ("limit", "max_new_tokens"):
        if getattr(args, field) < 0:
            p.error(f"--{field} must be >= 0, got {getattr(args, field)}")
    if args.batch_size < 1:
        p.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return args


def model_folder(path: str) -> str:
    """The HF folder to load: `path` itself, or <path>/export for a run's workdir."""
    path = os.path.expanduser(path)
    for candidate in (path, os.path.join(path, "export")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model={path}: no such folder")
    raise FileNotFoundError(f"--model={path}: no config.json there or in {path}/export (not a model folder)")


def settings(args, model_dir: str, source: str | None) -> dict[str, Any]:
    """What fixes a benchmark's result (a stored result is reused only when these match)."""
    return {"model": os.path.abspath(model_dir), "weights": weights_stamp(model_dir),
            "tokenizer": args.tokenizer, "data": os.path.abspath(source) if source else "hub",
            "limit": args.limit, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
            "dtype": args.dtype}  # fmt: skip


def weights_stamp(model_dir: str) -> list[list]:
    """[name, bytes, mtime_ns] of the folder's weight files: a model re-exported to the same folder (the usual
    <workdir>/export after more training) is scored again, not answered from the stored result."""
    names = sorted(n for n in os.listdir(model_dir) if n.endswith((".safetensors", ".bin", ".gguf", ".pt")))
    return [[n, (st := os.stat(os.path.join(model_dir, n))).st_size, st.st_mtime_ns] for n in names]


def stored(path: str, want: dict, overwrite: bool) -> dict | None:
    """The stored result at `path` when it was made with the settings `want` (else None, or an error)."""
    old = read_json(path)
    if not old or "metrics" not in old:
        return None
    if old.get("settings") == want:
        return old
    if overwrite:
        return None
    diff = sorted(k for k in want if old.get("settings", {}).get(k) != want[k])
    raise ValueError(f"{path} was scored with other settings ({', '.join(diff)} differ); "
                     "use another --out or pass --overwrite to rescore")  # fmt: skip


class Loaded:
    """The model, tokenizer and ids, loaded on first use (a rerun with every result stored loads nothing)."""

    def __init__(self, folder: str, tokenizer: str, dtype: str):
        self.folder, self.tok_path, self.dtype, self._model = folder, tokenizer or folder, dtype, None

    def get(self):
        if self._model is None:
            from tsdkd_jax import data, models

            self.tokenizer = data.load_tokenizer(self.tok_path)
            self.eos = data.eos_token_ids(self.folder, self.tokenizer)
            self.pad = data.resolve_pad_id(-1, self.tokenizer, self.eos)
            self._model = models.from_pretrained(self.folder, dtype=self.dtype)
        return self._model


def run_one(loaded: Loaded, name: str, source: str | None, args, jsonl: str) -> dict:
    """Metrics of one benchmark (native: our generation/log-likelihood scoring; else lm-eval)."""
    model = loaded.get()
    kw = {"eos_token_ids": loaded.eos, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    if get_benchmark(name).to_example is None:
        return lm_eval_suite.score(model, loaded.tokenizer, name, limit=args.limit, seed=args.seed, **kw)
    examples = suite.load(name, source, size=args.limit, seed=args.seed)
    return suite.score(
        model, loaded.tokenizer, name, examples, pad_token_id=loaded.pad, jsonl_path=jsonl, **kw
    )


def table(results: dict[str, dict]) -> str:
    """A plain-text table: benchmark, accuracy %, 95 % interval, n, whether this run scored it."""
    lines = [f"{'benchmark':<15} {'accuracy':>9} {'95% CI':>17} {'n':>6}  result"]
    for name, r in results.items():
        m = r["metrics"]
        ci = f"[{100 * m['ci95_low']:.1f}, {100 * m['ci95_high']:.1f}]"
        lines.append(f"{name:<15} {100 * m['accuracy']:>8.1f}% {ci:>17} {int(m['n']):>6}  {r['status']}")
    return "\n".join(lines)


def main(argv=None) -> dict[str, dict]:
    """Scores the benchmarks (reusing stored ones), writes results.json, prints the table; returns results."""
    args = parse_args(argv)
    names = suite.parse_names(args.benchmarks)
    srcs = suite.sources(names, data_dir=args.data_dir, files=suite.parse_files(args.benchmark_files))
    folder = model_folder(args.model)
    loaded, results = Loaded(folder, args.tokenizer, args.dtype), {}
    for name in names:
        path, want = os.path.join(args.out, f"{name}.json"), settings(args, folder, srcs[name])
        result = stored(path, want, args.overwrite)
        status = "stored"
        if result is None:
            metrics = run_one(loaded, name, srcs[name], args, os.path.join(args.out, f"{name}.jsonl"))
            result, status = {"benchmark": name, "metrics": metrics, "settings": want}, "scored"
            write_json(path, result)  # written at once: a crash later keeps this benchmark's result
        results[name] = {**result, "status": status}
        print(f"{name}: {100 * result['metrics']['accuracy']:.1f}% ({status})", flush=True)
    summary = {n: {"metrics": r["metrics"], "settings": r["settings"]} for n, r in results.items()}
    write_json(os.path.join(args.out, "results.json"), {"model": os.path.abspath(folder), "results": summary})
    print(table(results))
    return results
