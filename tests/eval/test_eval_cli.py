"""python -m tsdkd_jax.eval on the tiny student with tiny local benchmark files (offline): accuracy and its
Wilson interval against scipy, the JSON files and the table, resume per benchmark, errors naming the field."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from bench_files import gsm8k_file, sciq_file, tiny_student
from lm_eval_tasks import write_mc_task
from run_files import REPO
from scipy.stats import binomtest

from tsdkd_jax.eval import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_files")
    student, prompts = tiny_student()
    gsm8k, expected = gsm8k_file(str(folder), student, prompts)
    return {"student": student, "gsm8k": gsm8k, "sciq": sciq_file(str(folder)), "expected": expected,
            "dir": str(folder)}  # fmt: skip


def _args(f, out, benchmarks, *extra):
    return [f"--model={f['student']}", f"--benchmarks={benchmarks}", f"--out={out}", "--max_new_tokens=16",
            "--benchmark_files=" + ",".join(f"{b}={f[b]}" for b in benchmarks.split(",") if b in ("gsm8k", "sciq")),
            *extra]  # fmt: skip


def _json(path):
    with open(path) as fh:
        return json.load(fh)


def test_scores_writes_json_table_and_resumes_per_benchmark(files, tmp_path, capsys):
    out = tmp_path / "out"
    # a crash half way: gsm8k is scored, then sciq's file lacks a field the benchmark needs
    bad = tmp_path / "sciq.jsonl"
    bad.write_text(json.dumps({"question": "q?"}) + "\n")
    broken = [a if not a.startswith("--benchmark_files") else f"--benchmark_files=gsm8k={files['gsm8k']},"
              f"sciq={bad}" for a in _args(files, out, "gsm8k,sciq")]  # fmt: skip
    with pytest.raises(ValueError, match="lacks field"):
        cli.main(broken)
    first = _json(out / "gsm8k.json")
    n, k = first["metrics"]["n"], first["metrics"]["correct"]
    assert n == 8 and first["metrics"]["accuracy"] == pytest.approx(files["expected"])
    ci = binomtest(int(k), int(n)).proportion_ci(method="wilson")
    assert (first["metrics"]["ci95_low"], first["metrics"]["ci95_high"]) == pytest.approx((ci.low, ci.high))
    rows = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    assert sum(r["correct"] for r in rows) == k and len(rows) == 8
    capsys.readouterr()

    # the rerun (math500 is the MATH alias: not asked here) reuses gsm8k and scores only sciq
    results = cli.main(_args(files, out, "gsm8k,sciq"))
    assert results["gsm8k"]["status"] == "stored" and results["sciq"]["status"] == "scored"
    assert _json(out / "gsm8k.json") == first
    sciq = _json(out / "sciq.json")["metrics"]
    assert sciq["n"] == 4 and 0 <= sciq["accuracy"] <= 1
    summary = _json(out / "results.json")
    assert set(summary["results"]) == {"gsm8k", "sciq"}
    assert summary["results"]["gsm8k"]["metrics"] == first["metrics"]
    table = capsys.readouterr().out.splitlines()
    assert table[-3].split()[:2] == ["benchmark", "accuracy"]
    gsm_line = table[-2].split()
    assert gsm_line[0] == "gsm8k" and gsm_line[1] == f"{100 * files['expected']:.1f}%"
    assert gsm_line[-2:] == ["8", "stored"] and table[-1].split()[-1] == "scored"

    # other settings for a stored benchmark: an error naming what differs, unless --overwrite
    with pytest.raises(ValueError, match="limit differ"):
        cli.main(_args(files, out, "gsm8k", "--limit=4"))
    again = cli.main(_args(files, out, "gsm8k", "--limit=4", "--overwrite"))
    assert again["gsm8k"]["status"] == "scored" and again["gsm8k"]["metrics"]["n"] == 4


def test_data_dir_and_errors_name_the_field(files, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"--benchmarks: unknown benchmark 'gsm9k'"):
        cli.main(_args(files, out, "gsm8k,gsm9k"))
    with pytest.raises(FileNotFoundError, match=r"--benchmark_files: gsm8k=/nope.jsonl"):
        cli.main([f"--model={files['student']}", "--benchmarks=gsm8k", f"--out={out}",
                  "--benchmark_files=gsm8k=/nope.jsonl"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"--data_dir=.*no math.jsonl"):  # math500 = MATH
        cli.main([f"--model={files['student']}", "--benchmarks=gsm8k,math500", f"--out={out}",
                  f"--data_dir={files['dir']}"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"--model=.*no config.json"):
        cli.main([f"--model={tmp_path}", "--benchmarks=gsm8k", f"--out={out}", f"--data_dir={files['dir']}"])
    with pytest.raises(ValueError, match=r"--benchmark_files: files given for sciq, which are not among"):
        cli.main([f"--model={files['student']}", "--benchmarks=gsm8k", f"--out={out}",
                  f"--benchmark_files=gsm8k={files['gsm8k']},sciq={files['sciq']}"])  # fmt: skip
    with pytest.raises(ValueError, match="ifeval is scored by lm-eval"):
        cli.main([f"--model={files['student']}", "--benchmarks=ifeval", f"--out={out}",
                  f"--benchmark_files=ifeval={files['gsm8k']}"])  # fmt: skip
    assert not os.path.exists(out)  # every error came before anything was scored or written


def test_module_command_runs(files, tmp_path):
    """`python -m tsdkd_jax.eval` itself, with --data_dir (the reused result file: nothing is recomputed)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tsdkd_jax.eval", f"--model={files['student']}", "--benchmarks=gsm8k",
           f"--out={out}", f"--data_dir={files['dir']}", "--max_new_tokens=16"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("gsm8k")
    assert _json(out / "gsm8k.json")["metrics"]["accuracy"] == pytest.approx(files["expected"])


def test_lm_eval_route_headline_and_interval(files, tmp_path):
    """The lm-eval route (BBH, MuSR, IFEval) on a local multiple-choice task: lm-eval's accuracy equals our
    log-likelihood scoring of the same items, n counts them, the interval is 1.96 × the sample standard error."""
    from lm_eval.tasks import TaskManager

    from tsdkd_jax import data, models
    from tsdkd_jax.eval import evaluate_choices, lm_eval_suite

    rows = [{"prompt": f"what is {i} plus {i % 3}?", "choices": [str(i), str(2 * i + 1), "ann", str(i + i % 3)],
             "gold": i % 4} for i in range(8)]  # fmt: skip
    write_mc_task(tmp_path, "tiny_mc_cli", rows)
    tok, model = data.load_tokenizer(files["student"]), models.from_pretrained(files["student"])
    eos = data.eos_token_ids(files["student"], tok)
    got = lm_eval_suite.score(model, tok, "bbh", eos_token_ids=eos, batch_size=4, task="tiny_mc_cli",
                              task_manager=TaskManager(include_path=str(tmp_path)))  # fmt: skip
    native, scored = evaluate_choices(model, rows, tok, pad_token_id=tok.pad_token_id, batch_size=4)
    correct = np.array([r["correct"] for r in scored], np.float64)
    assert got["metric"] == "acc,none" and got["n"] == 8
    assert got["accuracy"] == pytest.approx(native["accuracy"])
    half = 1.959963984540054 * correct.std(ddof=1) / np.sqrt(len(correct))
    assert got["ci95_low"] == pytest.approx(max(0.0, correct.mean() - half))
    assert got["ci95_high"] == pytest.approx(min(1.0, correct.mean() + half))


def test_a_model_exported_again_to_the_same_folder_is_not_answered_from_the_stored_result(files, tmp_path):
    """The usual flow scores <workdir>/export; after more training the export is rewritten in place."""
    model = tmp_path / "export"
    shutil.copytree(files["student"], model)
    out = str(tmp_path / "out")
    args = [f"--model={model}", "--benchmarks=gsm8k", f"--out={out}", "--max_new_tokens=16", "--limit=4",
            f"--benchmark_files=gsm8k={files['gsm8k']}"]  # fmt: skip
    cli.main(args)
    assert cli.main(args)["gsm8k"]["status"] == "stored"
    weights = next(p for p in model.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes())  # a new export: same name, a new file
    os.utime(weights, ns=(time.time_ns() + 10**9,) * 2)
    with pytest.raises(ValueError, match=r"other settings \(weights differ\)"):
        cli.main(args)
    assert cli.main([*args, "--overwrite"])["gsm8k"]["status"] == "scored"
