"""A non-editable install ships configs/ as tsdkd_jax.configs, and the command line finds its default there."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_config_from_a_non_editable_install(tmp_path):
    src, target = tmp_path / "src", tmp_path / "site"
    # a copy of what the package is built from, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("tsdkd_jax", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    for name in ("testbed.py", "tiny.py", "gemma3_270m_layerdrop.py"):
        assert (target / "tsdkd_jax" / "configs" / name).is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    # from an unrelated folder: the default must not be looked up relative to the cwd
    probe = "import tsdkd_jax.main as m; print(m._TESTBED)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert Path(out.stdout.strip()) == target / "tsdkd_jax" / "configs" / "testbed.py"
